-- One row per clip (clip_id = SHA-256 of the file's bytes), whatever its status.
-- The same SQL runs on SQLite and PostgreSQL: no engine-specific types or functions.
CREATE TABLE media_files (
    clip_id            VARCHAR(64) PRIMARY KEY,
    uri                TEXT NOT NULL,          -- where the file was first found
    media_uri          TEXT,                   -- content-addressed copy the pipeline reads
    modality           VARCHAR(8),             -- 'video' | 'audio'; NULL if it never probed
    label              TEXT,                   -- NULL for unlabelled clips
    split              VARCHAR(8) NOT NULL,    -- 'train' | 'val' | 'test', fixed by clip_id
    status             VARCHAR(16) NOT NULL,   -- 'ok' | 'quarantined'
    error              TEXT,                   -- why a clip is quarantined
    size_bytes         BIGINT NOT NULL,
    container_format   TEXT,
    codec              TEXT,
    duration_seconds   DOUBLE PRECISION,
    fps                DOUBLE PRECISION,       -- video frame rate
    width              INTEGER,
    height             INTEGER,
    sample_rate        INTEGER,                -- audio sample rate, Hz
    channels           INTEGER,
    ingested_at        TIMESTAMP WITH TIME ZONE NOT NULL,
    updated_at         TIMESTAMP WITH TIME ZONE NOT NULL,
    CONSTRAINT media_files_status_check CHECK (status IN ('ok', 'quarantined')),
    CONSTRAINT media_files_split_check CHECK (split IN ('train', 'val', 'test')),
    CONSTRAINT media_files_modality_check CHECK (modality IS NULL OR modality IN ('video', 'audio'))
);

CREATE INDEX media_files_status_idx ON media_files (status, modality);

-- Every place a clip was seen. Lets ingest skip unchanged files without re-hashing them.
CREATE TABLE media_sources (
    uri            TEXT PRIMARY KEY,
    clip_id        VARCHAR(64) NOT NULL REFERENCES media_files (clip_id),
    size_bytes     BIGINT NOT NULL,
    mtime          DOUBLE PRECISION NOT NULL,
    label          TEXT,
    first_seen_at  TIMESTAMP WITH TIME ZONE NOT NULL,
    last_seen_at   TIMESTAMP WITH TIME ZONE NOT NULL
);
