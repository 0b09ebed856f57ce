-- Version numbers are reserved before a version's folder is written, so two trainings running
-- at once never take the same number. A rerun of the same training (same fingerprint) that was
-- killed before registering gets its reservation back.
CREATE TABLE model_version_reservations (
    model_version  VARCHAR(64) PRIMARY KEY,
    fingerprint    VARCHAR(64) NOT NULL,
    reserved_at    TIMESTAMP WITH TIME ZONE NOT NULL
);

CREATE INDEX model_version_reservations_fingerprint_idx
    ON model_version_reservations (fingerprint);

INSERT INTO model_version_reservations (model_version, fingerprint, reserved_at)
SELECT model_version, fingerprint, created_at FROM model_versions;

-- Work a process is doing (e.g. 'features/<settings_hash>/<clip_id>'), so that two runs at once
-- never do it twice. A claim lapses when its owner dies or stops renewing its heartbeat.
CREATE TABLE work_claims (
    resource      VARCHAR(255) PRIMARY KEY,
    owner         VARCHAR(255) NOT NULL,      -- host:boot:pid:start of the claiming process
    claimed_at    TIMESTAMP WITH TIME ZONE NOT NULL,
    heartbeat_at  TIMESTAMP WITH TIME ZONE NOT NULL
);

CREATE INDEX work_claims_owner_idx ON work_claims (owner);

-- Analyst views answer with the model now in production: they follow promote and rollback
-- instead of showing whichever model scored a clip last.
DROP VIEW low_confidence_predictions;

DROP VIEW latest_predictions;

-- For every ok clip, the prediction of the production model, with the clip's metadata and
-- its true label where known.
CREATE VIEW production_predictions AS
SELECT
    p.clip_id,
    p.model_version,
    p.predicted_label,
    p.confidence,
    p.probabilities,
    p.scored_at,
    p.run_id,
    p.logical_date,
    m.uri,
    m.modality,
    m.label AS true_label,
    m.split,
    m.duration_seconds,
    p.n_segments
FROM predictions p
JOIN model_versions v ON v.model_version = p.model_version AND v.stage = 'production'
JOIN media_files m ON m.clip_id = p.clip_id AND m.status = 'ok';

-- The name analysts already query: the same rows as production_predictions.
CREATE VIEW latest_predictions AS
SELECT * FROM production_predictions;

-- Production predictions the model was unsure of (confidence below 0.6): candidates for review.
CREATE VIEW low_confidence_predictions AS
SELECT * FROM production_predictions
WHERE confidence < 0.6;
