-- A fleet journal of format 1, as pv2hvm 0.1 wrote it: two sources done (one with a copy in
-- eu-west-1, one resumed with a replacement instance) and one failed. Every later pv2hvm must
-- read it (tests/fleet.rs) and write exactly this schema for format 1 (src/fleet/journal.rs).
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

PRAGMA user_version = 1;
INSERT INTO meta VALUES ('run_id', 'f1e2d3c4b5a6');
INSERT INTO meta VALUES ('shard', '0/2');
INSERT INTO meta VALUES ('generation', '2');
INSERT INTO items VALUES ('i-0a1b2c3d4e5f60718', 'us-east-1', 'web-1', 0, 'done', NULL, 'migrated', 'ami-0123456789abcdef0', NULL, NULL, 233, 19, 1, 1, 1795870000.0, 1795870007.5, NULL);
INSERT INTO items VALUES ('i-0b1b2c3d4e5f60718', 'us-east-1', 'web-2', 1, 'done', NULL, 'resumed', 'ami-0123456789abcdef1', 'i-0c0c0c0c0c0c0c0c0', NULL, 120, 19, 2, 2, 1795870100.0, 1795870104.0, NULL);
INSERT INTO items VALUES ('i-0c1b2c3d4e5f60718', 'eu-west-1', 'db, primary', 2, 'failed', 'read', 'failed', NULL, NULL, 'planning: kernel 4.9 cannot run as an HVM guest', 0, 0, 1, 2, 1795870200.0, 1795870201.0, NULL);
INSERT INTO stages VALUES ('i-0a1b2c3d4e5f60718', 1, 'snapshot', 1795870000.0, 1795870001.0, 'snap-0a');
INSERT INTO stages VALUES ('i-0a1b2c3d4e5f60718', 1, 'read', 1795870001.0, 1795870001.5, '40 block(s) fetched');
INSERT INTO stages VALUES ('i-0a1b2c3d4e5f60718', 1, 'convert', 1795870001.5, 1795870006.5, '233 block(s) fetched');
INSERT INTO stages VALUES ('i-0a1b2c3d4e5f60718', 1, 'upload', 1795870006.5, 1795870007.0, 'snap-0b');
INSERT INTO stages VALUES ('i-0a1b2c3d4e5f60718', 1, 'register', 1795870007.0, 1795870007.5, 'ami-0123456789abcdef0');
INSERT INTO stages VALUES ('i-0b1b2c3d4e5f60718', 2, 'upload', 1795870100.0, 1795870100.0, 'snap-0c (found)');
INSERT INTO stages VALUES ('i-0b1b2c3d4e5f60718', 2, 'register', 1795870100.0, 1795870102.0, 'ami-0123456789abcdef1');
INSERT INTO stages VALUES ('i-0b1b2c3d4e5f60718', 2, 'launch', 1795870102.0, 1795870104.0, 'i-0c0c0c0c0c0c0c0c0');
INSERT INTO resources VALUES ('ami-0123456789abcdef0', 'us-east-1', 'i-0a1b2c3d4e5f60718', 'image', 'image', 1795870007.5);
INSERT INTO resources VALUES ('ami-0fedcba987654321f', 'eu-west-1', 'i-0a1b2c3d4e5f60718', 'image', 'image', 1795870007.6);
INSERT INTO resources VALUES ('snap-0b', 'us-east-1', 'i-0a1b2c3d4e5f60718', 'snapshot', 'root', 1795870007.0);
INSERT INTO resources VALUES ('i-0c0c0c0c0c0c0c0c0', 'us-east-1', 'i-0b1b2c3d4e5f60718', 'instance', 'instance', 1795870104.0);
