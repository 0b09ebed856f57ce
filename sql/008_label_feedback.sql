-- Reviewers' labels, where an ingest label came from, which clips trained each model version,
-- and the thresholds the analyst views compare with.

-- Where media_files.label came from: 'ingest' (a labelled/<label>/ folder) or 'manifest' (the
-- label column of a CSV manifest). NULL for unlabelled clips. Labels before this migration came
-- from folders or manifests alike; they are recorded as 'ingest'.
ALTER TABLE media_files ADD COLUMN label_source VARCHAR(16)
    CONSTRAINT media_files_label_source_check
    CHECK (label_source IS NULL OR label_source IN ('ingest', 'manifest'));

UPDATE media_files SET label_source = 'ingest' WHERE label IS NOT NULL;

-- Reviewers' corrections, append-only: a new label for a clip is a new row, never an edit, so
-- the history of who said what stays. A clip's effective label is its latest row's (highest id),
-- else its ingest label (view clip_labels). id is MAX(id) + 1, taken by the insert itself
-- (a sequence would need its own grants and ownership).
CREATE TABLE label_feedback (
    id              BIGINT PRIMARY KEY,
    clip_id         VARCHAR(64) NOT NULL REFERENCES media_files (clip_id),
    label           TEXT NOT NULL,
    previous_label  TEXT,                       -- the clip's effective label before this row
    reviewer        TEXT NOT NULL,
    note            TEXT,
    created_at      TIMESTAMP WITH TIME ZONE NOT NULL
);

CREATE INDEX label_feedback_clip_idx ON label_feedback (clip_id, id);

CREATE INDEX label_feedback_created_at_idx ON label_feedback (created_at);

-- only: sqlite
CREATE TRIGGER label_feedback_no_update BEFORE UPDATE ON label_feedback
BEGIN SELECT RAISE(ABORT, 'label_feedback is append-only: add a new row instead'); END;

-- only: sqlite
CREATE TRIGGER label_feedback_no_delete BEFORE DELETE ON label_feedback
BEGIN SELECT RAISE(ABORT, 'label_feedback is append-only: add a new row instead'); END;

-- only: postgresql
CREATE FUNCTION label_feedback_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'label_feedback is append-only: add a new row instead'; END
$$;

-- only: postgresql
CREATE TRIGGER label_feedback_append_only BEFORE UPDATE OR DELETE ON label_feedback
FOR EACH ROW EXECUTE FUNCTION label_feedback_append_only();

-- The clips each model version was trained (split 'train'), validated ('val') and tested
-- ('test') on, with the label it learnt. Written before the version is registered (so no
-- registered version lacks it): hence no foreign key to model_versions.
CREATE TABLE model_training_clips (
    model_version  VARCHAR(64) NOT NULL,
    clip_id        VARCHAR(64) NOT NULL REFERENCES media_files (clip_id),
    split          VARCHAR(8) NOT NULL,
    label          TEXT NOT NULL,
    PRIMARY KEY (model_version, clip_id),
    CONSTRAINT model_training_clips_split_check CHECK (split IN ('train', 'val', 'test'))
);

CREATE INDEX model_training_clips_label_idx ON model_training_clips (model_version, split, label);

-- Thresholds the views compare with, copied from the pipeline's settings
-- (PIPELINE_REVIEW_THRESHOLD, PIPELINE_DRIFT_PSI_THRESHOLD) whenever scoring runs or feedback
-- is recorded. A view cannot read environment variables; these rows are what it reads.
CREATE TABLE analyst_settings (
    name        VARCHAR(64) PRIMARY KEY,
    value       DOUBLE PRECISION NOT NULL,
    updated_at  TIMESTAMP WITH TIME ZONE NOT NULL
);

INSERT INTO analyst_settings (name, value, updated_at) VALUES
    ('review_threshold', 0.6, CURRENT_TIMESTAMP),
    ('drift_psi_threshold', 0.2, CURRENT_TIMESTAMP);

CREATE INDEX predictions_version_scored_idx ON predictions (model_version, scored_at);

CREATE INDEX segment_predictions_version_idx ON segment_predictions (model_version, clip_id);

COMMENT ON TABLE label_feedback IS 'Reviewers'' labels, append-only (UPDATE and DELETE raise). A clip''s effective label is its latest row''s label (highest id), else media_files.label; see view clip_labels. Written by `stpipe label`.';
COMMENT ON COLUMN label_feedback.id IS 'Order of arrival: the highest id of a clip is its current label.';
COMMENT ON COLUMN label_feedback.previous_label IS 'The clip''s effective label just before this row (NULL: it had none).';
COMMENT ON COLUMN label_feedback.reviewer IS 'Who gave the label (option by of `stpipe label`; default $USER).';
COMMENT ON COLUMN media_files.label_source IS 'Where media_files.label came from: ingest (labelled/<label>/ folder) or manifest; NULL when unlabelled.';
COMMENT ON TABLE model_training_clips IS 'The clips each model version was trained (train), validated (val) and tested (test) on, with the label it learnt.';
COMMENT ON TABLE analyst_settings IS 'Thresholds the views use (review_threshold, drift_psi_threshold), copied from the pipeline settings when scoring runs or feedback is recorded.';
