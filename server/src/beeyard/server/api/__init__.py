"""One module per REST family. Each exposes ``ROUTES``: thin handlers that parse,
call the database or a service, and return the envelope."""
