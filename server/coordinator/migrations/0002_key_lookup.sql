-- Warren coordinator schema, version 2.
--
-- A WireGuard public key belongs to one agent or device in a deployment;
-- registration looks a key up in both tables, so both are indexed on it.

CREATE INDEX agents_public_key ON agents(public_key);
CREATE INDEX devices_public_key ON devices(public_key);
