-- Long clips are scored per segment; the clip-level row in `predictions` averages them.
CREATE TABLE segment_predictions (
    clip_id          VARCHAR(64) NOT NULL REFERENCES media_files (clip_id),
    segment_index    INTEGER NOT NULL,
    model_version    VARCHAR(64) NOT NULL REFERENCES model_versions (model_version),
    n_segments       INTEGER NOT NULL,
    start_seconds    DOUBLE PRECISION NOT NULL,
    end_seconds      DOUBLE PRECISION NOT NULL,
    predicted_label  TEXT NOT NULL,
    confidence       DOUBLE PRECISION NOT NULL,
    probabilities    TEXT NOT NULL,              -- JSON object {label: probability}
    scored_at        TIMESTAMP WITH TIME ZONE NOT NULL,
    run_id           TEXT,
    logical_date     TIMESTAMP WITH TIME ZONE,
    PRIMARY KEY (clip_id, segment_index, model_version)
);

-- How many segments each clip-level prediction averages.
ALTER TABLE predictions ADD COLUMN n_segments INTEGER;

-- Which feature streams a model reads: JSON list, e.g. ["video", "audio"].
ALTER TABLE model_versions ADD COLUMN streams TEXT;
