-- Identity and access: users, browser sessions, API keys, mobile devices,
-- TOTP recovery codes and the audit log. Every credential we generate is kept
-- as a SHA-256 digest; TOTP secrets are encrypted with a key derived from the
-- server secret.

CREATE TABLE users (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username            text NOT NULL,
    password_hash       text NOT NULL,
    role                text NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
    disabled            boolean NOT NULL DEFAULT false,
    totp_secret_enc     bytea,              -- set by 2FA setup, encrypted at rest
    totp_enabled        boolean NOT NULL DEFAULT false,
    totp_last_step      bigint,             -- last accepted time step: a code works once
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    last_login_at       timestamptz
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

CREATE TABLE recovery_codes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    code_digest bytea NOT NULL UNIQUE,
    used_at     timestamptz
);
CREATE INDEX recovery_codes_user ON recovery_codes (user_id);

CREATE TABLE sessions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    token_digest bytea NOT NULL UNIQUE,
    csrf_token   text NOT NULL,
    ip           text,
    user_agent   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    name         text NOT NULL,
    key_prefix   text NOT NULL,              -- first 8 characters after "beeyard_", for display
    key_digest   bytea NOT NULL UNIQUE,
    scope        text NOT NULL CHECK (scope IN ('read', 'full')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- A mobile device is one refresh-token family: reuse of a rotated refresh
-- token revokes the device, and with it every token of the family.
CREATE TABLE mobile_devices (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    device_name  text NOT NULL,
    ip           text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX mobile_devices_user ON mobile_devices (user_id);

CREATE TABLE mobile_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id    bigint NOT NULL REFERENCES mobile_devices ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('access', 'refresh')),
    token_digest bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    rotated_at   timestamptz                 -- refresh tokens: when exchanged for a new pair
);
CREATE INDEX mobile_tokens_device ON mobile_tokens (device_id);

-- actor_user_id has no foreign key on purpose: the trail outlives the user.
CREATE TABLE audit_logs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor_user_id  bigint,
    actor          text,                      -- username at the time, or what was tried
    principal_kind text,                      -- session, device, api_key, or null
    action         text NOT NULL,
    target         text,
    ip             text,
    outcome        text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    status         integer,
    request_id     text,
    detail         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_logs_at ON audit_logs (at DESC);
CREATE INDEX audit_logs_actor ON audit_logs (actor_user_id, at DESC);
CREATE INDEX audit_logs_action ON audit_logs (action, at DESC);
