"""Keys derived from the server secret, one per purpose.

HKDF with a distinct label per use means a key that leaks from one purpose
(say, the cookie key) says nothing about another (the at-rest key).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive(secret: bytes, purpose: str, length: int = 32) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=b"beeyard", info=purpose.encode()
    ).derive(secret)


@dataclass(frozen=True)
class Keys:
    cookie: Fernet  # aiohttp-session's encrypted cookie
    at_rest: Fernet  # TOTP secrets and other credentials we must be able to read back

    @classmethod
    def from_secret(cls, secret: bytes) -> Keys:
        def fernet(purpose: str) -> Fernet:
            return Fernet(base64.urlsafe_b64encode(derive(secret, purpose)))

        return cls(cookie=fernet("session-cookie-v1"), at_rest=fernet("at-rest-v1"))

    def seal(self, plaintext: str) -> bytes:
        return self.at_rest.encrypt(plaintext.encode())

    def open(self, sealed: bytes) -> str:
        try:
            return self.at_rest.decrypt(bytes(sealed)).decode()
        except InvalidToken as exc:  # wrong secret key for this database
            raise ValueError(
                "cannot decrypt a stored secret: was BEEYARD_SECRET_KEY changed?"
            ) from exc
