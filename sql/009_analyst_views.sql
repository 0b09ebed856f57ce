-- Views analysts can trust: effective labels (feedback first), the production model's answers
-- (they follow promote and rollback), accuracy on clips a model never trained on, drift
-- against a model's training distribution, confidence, quarantine, segments and review.
-- A prediction's day is the scoring run's logical date (else when it was scored), as in
-- daily_label_counts. Thresholds come from analyst_settings (migration 008).

-- The effective label of every clip: its latest feedback (label_feedback, highest id), else its
-- ingest label; label_source says which ('feedback', 'ingest' or 'manifest').
CREATE VIEW clip_labels AS
SELECT
    m.clip_id,
    COALESCE(f.label, m.label) AS label,
    CASE
        WHEN f.label IS NOT NULL THEN 'feedback'
        WHEN m.label IS NOT NULL THEN COALESCE(m.label_source, 'ingest')
    END AS label_source,
    m.label AS ingest_label,
    f.reviewer,
    f.created_at AS reviewed_at
FROM media_files m
LEFT JOIN (
    SELECT lf.clip_id, lf.label, lf.reviewer, lf.created_at
    FROM label_feedback lf
    JOIN (SELECT clip_id, MAX(id) AS id FROM label_feedback GROUP BY clip_id) latest
        ON latest.id = lf.id
) f ON f.clip_id = m.clip_id;

DROP VIEW low_confidence_predictions;

DROP VIEW latest_predictions;

DROP VIEW production_predictions;

-- For every ok clip, the prediction of the model now in production, with the clip's metadata,
-- its effective label (true_label) and where that label came from.
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
    l.label AS true_label,
    m.split,
    m.duration_seconds,
    p.n_segments,
    l.label_source,
    DATE(COALESCE(p.logical_date, p.scored_at)) AS day
FROM predictions p
JOIN model_versions v ON v.model_version = p.model_version AND v.stage = 'production'
JOIN media_files m ON m.clip_id = p.clip_id AND m.status = 'ok'
JOIN clip_labels l ON l.clip_id = p.clip_id;

-- The name analysts already query: the same rows as production_predictions.
CREATE VIEW latest_predictions AS
SELECT * FROM production_predictions;

-- Production predictions below the review threshold (analyst_settings.review_threshold).
CREATE VIEW low_confidence_predictions AS
SELECT pp.*
FROM production_predictions pp
JOIN analyst_settings s ON s.name = 'review_threshold'
WHERE pp.confidence < s.value;

-- Every prediction of a labelled ok clip that its model did not learn from: the clip was not in
-- that version's train or val split (model_training_clips). A version trained before that
-- record existed is judged on test-split clips only.
CREATE VIEW model_evaluations AS
SELECT
    DATE(COALESCE(p.logical_date, p.scored_at)) AS day,
    p.model_version,
    p.clip_id,
    l.label AS true_label,
    l.label_source,
    p.predicted_label,
    p.confidence,
    CASE WHEN p.predicted_label = l.label THEN 1 ELSE 0 END AS correct
FROM predictions p
JOIN media_files m ON m.clip_id = p.clip_id AND m.status = 'ok'
JOIN clip_labels l ON l.clip_id = p.clip_id AND l.label IS NOT NULL
LEFT JOIN model_training_clips t
    ON t.model_version = p.model_version AND t.clip_id = p.clip_id
LEFT JOIN (SELECT DISTINCT model_version FROM model_training_clips) recorded
    ON recorded.model_version = p.model_version
WHERE (t.split IS NULL OR t.split = 'test')
  AND (recorded.model_version IS NOT NULL OR m.split = 'test');

-- Per model version and day: labelled clips scored that the model never learnt from, how many
-- it got right, and how many of them carry a reviewer's label.
CREATE VIEW model_accuracy_daily AS
SELECT
    day,
    model_version,
    COUNT(*) AS labelled_clips,
    SUM(correct) AS correct,
    CAST(SUM(correct) AS DOUBLE PRECISION) / COUNT(*) AS accuracy,
    SUM(CASE WHEN label_source = 'feedback' THEN 1 ELSE 0 END) AS reviewed_clips,
    SUM(CASE WHEN label_source = 'feedback' THEN correct ELSE 0 END) AS reviewed_correct
FROM model_evaluations
GROUP BY day, model_version;

-- Per model version, day and true class: the recall of model_accuracy_daily's clips.
CREATE VIEW model_recall_daily AS
SELECT
    day,
    model_version,
    true_label,
    COUNT(*) AS clips,
    SUM(correct) AS correct,
    CAST(SUM(correct) AS DOUBLE PRECISION) / COUNT(*) AS recall
FROM model_evaluations
GROUP BY day, model_version, true_label;

-- Per day, model version and class: the share of that day's ok clips the version gave the
-- class, against the class's share of the version's training split. Classes seen on either
-- side appear; a version with no training record (model_training_clips) has no rows.
CREATE VIEW prediction_drift_classes AS
WITH scored AS (
    SELECT
        DATE(COALESCE(p.logical_date, p.scored_at)) AS day,
        p.model_version,
        p.predicted_label AS label,
        COUNT(*) AS clips
    FROM predictions p
    JOIN media_files m ON m.clip_id = p.clip_id AND m.status = 'ok'
    GROUP BY DATE(COALESCE(p.logical_date, p.scored_at)), p.model_version, p.predicted_label
),
day_totals AS (
    SELECT day, model_version, SUM(clips) AS clips FROM scored GROUP BY day, model_version
),
trained AS (
    SELECT model_version, label, COUNT(*) AS clips
    FROM model_training_clips WHERE split = 'train'
    GROUP BY model_version, label
),
train_totals AS (
    SELECT model_version, SUM(clips) AS clips FROM trained GROUP BY model_version
),
bins AS (
    SELECT d.day, d.model_version, t.label
    FROM day_totals d JOIN trained t ON t.model_version = d.model_version
    UNION
    SELECT day, model_version, label FROM scored
)
SELECT
    b.day,
    b.model_version,
    b.label,
    COALESCE(s.clips, 0) AS predicted_clips,
    CAST(COALESCE(s.clips, 0) AS DOUBLE PRECISION) / d.clips AS predicted_share,
    COALESCE(t.clips, 0) AS training_clips,
    CAST(COALESCE(t.clips, 0) AS DOUBLE PRECISION) / tt.clips AS training_share
FROM bins b
JOIN day_totals d ON d.day = b.day AND d.model_version = b.model_version
JOIN train_totals tt ON tt.model_version = b.model_version
LEFT JOIN scored s
    ON s.day = b.day AND s.model_version = b.model_version AND s.label = b.label
LEFT JOIN trained t ON t.model_version = b.model_version AND t.label = b.label;

-- Per day and model version: the population stability index of the predicted labels against
-- the training labels, sum over classes of (p - q) * ln(p / q), shares below 0.0001 counted as
-- 0.0001 (an empty class would be infinite), and whether it exceeds drift_psi_threshold.
CREATE VIEW prediction_drift AS
SELECT
    c.day,
    c.model_version,
    MAX(c.predicted_clips_total) AS clips,
    COUNT(*) AS classes,
    SUM((c.p - c.q) * LN(c.p / c.q)) AS psi,
    MAX(s.value) AS psi_threshold,
    CASE WHEN SUM((c.p - c.q) * LN(c.p / c.q)) > MAX(s.value) THEN 1 ELSE 0 END AS drifted
FROM (
    SELECT
        day,
        model_version,
        SUM(predicted_clips) OVER (PARTITION BY day, model_version) AS predicted_clips_total,
        CASE WHEN predicted_share < 0.0001 THEN 0.0001 ELSE predicted_share END AS p,
        CASE WHEN training_share < 0.0001 THEN 0.0001 ELSE training_share END AS q
    FROM prediction_drift_classes
) c
JOIN analyst_settings s ON s.name = 'drift_psi_threshold'
GROUP BY c.day, c.model_version;

-- Per day and model version: confidence quantiles of its ok clips (nearest rank: the smallest
-- confidence with at least that fraction of the day's clips at or below it; the same SQL on
-- both databases, no percentile_cont) and how many fell below review_threshold.
CREATE VIEW confidence_daily AS
SELECT
    r.day,
    r.model_version,
    COUNT(*) AS clips,
    AVG(r.confidence) AS mean_confidence,
    MIN(CASE WHEN r.position >= 0.1 * r.clips THEN r.confidence END) AS p10,
    MIN(CASE WHEN r.position >= 0.5 * r.clips THEN r.confidence END) AS p50,
    MIN(CASE WHEN r.position >= 0.9 * r.clips THEN r.confidence END) AS p90,
    SUM(CASE WHEN r.confidence < s.value THEN 1 ELSE 0 END) AS below_review_threshold,
    MAX(s.value) AS review_threshold
FROM (
    SELECT
        d.day,
        d.model_version,
        d.confidence,
        ROW_NUMBER() OVER (
            PARTITION BY d.day, d.model_version ORDER BY d.confidence
        ) AS position,
        COUNT(*) OVER (PARTITION BY d.day, d.model_version) AS clips
    FROM (
        SELECT
            DATE(COALESCE(p.logical_date, p.scored_at)) AS day,
            p.model_version,
            p.confidence
        FROM predictions p
        JOIN media_files m ON m.clip_id = p.clip_id AND m.status = 'ok'
    ) d
) r
JOIN analyst_settings s ON s.name = 'review_threshold'
GROUP BY r.day, r.model_version;

-- Quarantined files per day (when they were quarantined) and reason, with how many files were
-- registered that day in all (the quarantine rate is files / ingested).
CREATE VIEW quarantine_daily AS
SELECT
    q.day,
    q.reason,
    q.files,
    COALESCE(i.ingested, 0) AS ingested
FROM (
    SELECT DATE(updated_at) AS day, COALESCE(error, 'unknown') AS reason, COUNT(*) AS files
    FROM media_files
    WHERE status = 'quarantined'
    GROUP BY DATE(updated_at), COALESCE(error, 'unknown')
) q
LEFT JOIN (
    SELECT DATE(ingested_at) AS day, COUNT(*) AS ingested
    FROM media_files
    GROUP BY DATE(ingested_at)
) i ON i.day = q.day;

-- Per ok clip the production model scored in more than one segment: each segment's label, in
-- time order (segment_index), with its start and end in seconds from the clip's start.
CREATE VIEW segment_timeline AS
SELECT
    sp.clip_id,
    sp.model_version,
    sp.segment_index,
    sp.n_segments,
    sp.start_seconds,
    sp.end_seconds,
    sp.predicted_label,
    sp.confidence,
    sp.scored_at
FROM segment_predictions sp
JOIN model_versions v ON v.model_version = sp.model_version AND v.stage = 'production'
JOIN media_files m ON m.clip_id = sp.clip_id AND m.status = 'ok'
WHERE sp.n_segments > 1;

-- Production predictions below review_threshold whose clip no reviewer has labelled yet,
-- most recent first: what a person should look at.
CREATE VIEW review_queue AS
SELECT pp.*
FROM production_predictions pp
JOIN analyst_settings s ON s.name = 'review_threshold'
WHERE pp.confidence < s.value
  AND NOT EXISTS (SELECT 1 FROM label_feedback f WHERE f.clip_id = pp.clip_id)
ORDER BY pp.scored_at DESC, pp.clip_id;

COMMENT ON VIEW clip_labels IS 'Every clip''s effective label: its latest reviewer label (label_feedback), else its ingest label. Training and evaluation use this label.';
COMMENT ON COLUMN clip_labels.label_source IS 'feedback, ingest (labelled/<label>/ folder) or manifest; NULL when the clip has no label.';
COMMENT ON COLUMN clip_labels.ingest_label IS 'The label given at ingest (media_files.label), before any review.';
COMMENT ON VIEW production_predictions IS 'For every ok clip, the prediction of the model now in production (follows promote and rollback), with clip metadata and its effective label.';
COMMENT ON COLUMN production_predictions.true_label IS 'The effective label (clip_labels.label): latest reviewer label, else ingest label; NULL if unlabelled.';
COMMENT ON COLUMN production_predictions.label_source IS 'Where true_label came from: feedback, ingest or manifest.';
COMMENT ON COLUMN production_predictions.probabilities IS 'JSON object {class: probability}; PostgreSQL: probabilities::json ->> ''class''.';
COMMENT ON COLUMN production_predictions.day IS 'The scoring run''s logical date, else the day it was scored.';
COMMENT ON VIEW latest_predictions IS 'Same rows as production_predictions (the older name).';
COMMENT ON VIEW low_confidence_predictions IS 'Production predictions below analyst_settings.review_threshold, reviewed or not.';
COMMENT ON VIEW model_evaluations IS 'Predictions of labelled ok clips the model did not train or validate on (model_training_clips), with the effective label and correct = 1 or 0.';
COMMENT ON VIEW model_accuracy_daily IS 'Per model version and day: labelled clips scored that the model never learnt from, correct, accuracy (0-1), and those with a reviewer label.';
COMMENT ON COLUMN model_accuracy_daily.reviewed_clips IS 'Clips among labelled_clips whose label came from a reviewer (label_feedback).';
COMMENT ON VIEW model_recall_daily IS 'Per model version, day and true class: clips, correct and recall (0-1) on the clips of model_accuracy_daily.';
COMMENT ON VIEW prediction_drift_classes IS 'Per day, model version and class: share of predicted labels against the class share of the version''s training split.';
COMMENT ON VIEW prediction_drift IS 'Per day and model version: population stability index of predicted labels against the training labels (shares floored at 0.0001) and drifted = 1 above analyst_settings.drift_psi_threshold.';
COMMENT ON COLUMN prediction_drift.psi IS 'Sum over classes of (p - q) * ln(p / q); p predicted share, q training share.';
COMMENT ON VIEW confidence_daily IS 'Per day and model version: nearest-rank confidence quantiles p10, p50, p90 and the count below analyst_settings.review_threshold.';
COMMENT ON VIEW quarantine_daily IS 'Quarantined files per day and reason, and the files registered that day (ingested).';
COMMENT ON VIEW segment_timeline IS 'Per ok clip the production model scored in more than one segment: segment labels in time order (segment_index), start and end in seconds.';
COMMENT ON VIEW review_queue IS 'Production predictions below analyst_settings.review_threshold that no reviewer has labelled yet, most recent first. Label them with `stpipe label CLIP_ID LABEL`.';
