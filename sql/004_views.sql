-- The newest prediction for each clip (most recent scoring, any model version),
-- with the clip's metadata and its true label where known.
CREATE VIEW latest_predictions AS
SELECT
    ranked.clip_id,
    ranked.model_version,
    ranked.predicted_label,
    ranked.confidence,
    ranked.probabilities,
    ranked.scored_at,
    ranked.run_id,
    ranked.logical_date,
    m.uri,
    m.modality,
    m.label AS true_label,
    m.split,
    m.duration_seconds
FROM (
    SELECT
        p.*,
        ROW_NUMBER() OVER (
            PARTITION BY p.clip_id ORDER BY p.scored_at DESC, p.model_version DESC
        ) AS recency
    FROM predictions p
) ranked
JOIN media_files m ON m.clip_id = ranked.clip_id
WHERE ranked.recency = 1;

-- How many clips got each label per day (the scoring run's logical date) and model version.
CREATE VIEW daily_label_counts AS
SELECT
    DATE(COALESCE(logical_date, scored_at)) AS day,
    model_version,
    predicted_label,
    COUNT(*) AS clips,
    AVG(confidence) AS mean_confidence
FROM predictions
GROUP BY DATE(COALESCE(logical_date, scored_at)), model_version, predicted_label;

-- Latest predictions the model was unsure of (confidence below 0.6): candidates for review.
CREATE VIEW low_confidence_predictions AS
SELECT *
FROM latest_predictions
WHERE confidence < 0.6;
