-- Warren coordinator schema, version 1.
--
-- `meta` is a single row. Every write transaction bumps `revision`, which the
-- running server polls to learn that another process (an admin command)
-- changed something.

CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL DEFAULT 0,
    -- Next tunnel address index (see src/addr.rs); 0 is never handed out.
    next_address INTEGER NOT NULL DEFAULT 1,
    ipv6_prefix TEXT NOT NULL,
    -- DNS suffix, stored by the first `serve`.
    suffix TEXT
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- Secrets are never stored: only salt and SHA-256(salt || secret).
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'agent')),
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    agent_id TEXT REFERENCES agents(id) ON DELETE CASCADE,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    CHECK ((kind = 'agent') = (agent_id IS NOT NULL))
);
CREATE INDEX tokens_user ON tokens(user_id);
CREATE INDEX tokens_agent ON tokens(agent_id);

CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (owner_id, name)
);

-- `seq` orders agents by creation: a workspace's first agent also answers to
-- `workspace.suffix`.
CREATE TABLE agents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    address_index INTEGER NOT NULL UNIQUE,
    public_key TEXT,
    -- JSON array of socket addresses.
    endpoints TEXT NOT NULL DEFAULT '[]',
    -- 1: a plain WireGuard peer registered by `agent add --public-key`; it
    -- never connects and is always shown online.
    static INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
);

-- Client devices: one per (user, per-session WireGuard key).
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    public_key TEXT NOT NULL,
    address_index INTEGER NOT NULL UNIQUE,
    endpoints TEXT NOT NULL DEFAULT '[]',
    hostname TEXT,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    UNIQUE (user_id, public_key)
);
