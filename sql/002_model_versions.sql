-- The model registry: every trained version, and which one is in production.
CREATE TABLE model_versions (
    model_version   VARCHAR(64) PRIMARY KEY,
    model_uri       TEXT NOT NULL,             -- folder holding model.keras and metadata.json
    settings_hash   VARCHAR(32) NOT NULL,      -- features the model reads
    fingerprint     VARCHAR(64) NOT NULL,      -- hash of training data + hyper-parameters
    class_names     TEXT NOT NULL,             -- JSON list, index = output unit
    metrics         TEXT NOT NULL,             -- JSON object of test-split metrics
    test_accuracy   DOUBLE PRECISION,
    stage           VARCHAR(16) NOT NULL,      -- 'production' | 'candidate' | 'archived'
    created_at      TIMESTAMP WITH TIME ZONE NOT NULL,
    promoted_at     TIMESTAMP WITH TIME ZONE,
    CONSTRAINT model_versions_stage_check CHECK (stage IN ('production', 'candidate', 'archived'))
);

CREATE INDEX model_versions_fingerprint_idx ON model_versions (fingerprint);
