-- The fleet journal, format 1. A local cache of a run and the source of its report; the state
-- of record is in AWS tags. Changing this file means a new format number and a migration in
-- journal.rs: journals of every earlier format must keep opening (tests/fleet.rs checks).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- One row per source (instance or AMI) of this shard.
CREATE TABLE items (
    source          TEXT PRIMARY KEY,
    region          TEXT NOT NULL,
    name            TEXT,
    ord             INTEGER NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'done', 'failed')),
    stage           TEXT,
    outcome         TEXT,
    image           TEXT,
    instance        TEXT,
    error           TEXT,
    blocks_fetched  INTEGER NOT NULL DEFAULT 0,
    blocks_uploaded INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    generation      INTEGER NOT NULL DEFAULT 0,
    started         REAL,
    finished        REAL,
    plan            TEXT
);
CREATE INDEX items_todo ON items (status, generation, ord);
-- Each stage of each attempt: started and finished as seconds since the epoch.
CREATE TABLE stages (
    source   TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    stage    TEXT NOT NULL,
    started  REAL NOT NULL,
    finished REAL,
    detail   TEXT,
    PRIMARY KEY (source, attempt, stage)
);
-- Every AWS resource a run made (or found and reused: the AMI and its copies).
CREATE TABLE resources (
    id      TEXT NOT NULL,
    region  TEXT NOT NULL,
    source  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    role    TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (id, region)
);
