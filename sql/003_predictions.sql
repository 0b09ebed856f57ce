-- One row per clip and model version. Re-scoring a clip with the same version replaces its row.
CREATE TABLE predictions (
    clip_id          VARCHAR(64) NOT NULL REFERENCES media_files (clip_id),
    model_version    VARCHAR(64) NOT NULL REFERENCES model_versions (model_version),
    predicted_label  TEXT NOT NULL,
    confidence       DOUBLE PRECISION NOT NULL,  -- probability of predicted_label
    probabilities    TEXT NOT NULL,              -- JSON object {label: probability}, all classes
    scored_at        TIMESTAMP WITH TIME ZONE NOT NULL,
    run_id           TEXT,                       -- Airflow run id, or 'cli-...' outside Airflow
    logical_date     TIMESTAMP WITH TIME ZONE,   -- Airflow logical date of the scoring run
    PRIMARY KEY (clip_id, model_version)
);

CREATE INDEX predictions_scored_at_idx ON predictions (scored_at);
