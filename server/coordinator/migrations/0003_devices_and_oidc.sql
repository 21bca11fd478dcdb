-- Warren coordinator schema, version 3: per-device tokens and OpenID Connect
-- sign-in (issue 14, docs/signin.md).
--
-- A token minted by a browser sign-in is named after the device it was made
-- for (host name and OS, at most 64 characters, checked in src/db.rs) and
-- records when it was last used, so people can tell their devices apart and
-- revoke the right one. Tokens made by `warren-coord token create` keep
-- origin 'admin'.

ALTER TABLE tokens ADD COLUMN device_name TEXT;
-- Unix seconds; updated at most once a minute per token.
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
ALTER TABLE tokens ADD COLUMN origin TEXT NOT NULL DEFAULT 'admin'
    CHECK (origin IN ('admin', 'browser'));

-- The identity provider's (issuer, subject) a user signs in as. Both or
-- neither are set; a pair belongs to at most one user.
ALTER TABLE users ADD COLUMN oidc_issuer TEXT;
ALTER TABLE users ADD COLUMN oidc_subject TEXT;
CREATE UNIQUE INDEX users_oidc ON users(oidc_issuer, oidc_subject)
    WHERE oidc_issuer IS NOT NULL AND oidc_subject IS NOT NULL;
