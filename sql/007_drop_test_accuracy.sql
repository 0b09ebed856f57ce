-- model_versions.test_accuracy copied metrics' "accuracy" and nothing read it: the metrics JSON
-- is the one place a version's test-split scores live. No view names the column, so none needs
-- recreating. DROP COLUMN needs SQLite >= 3.35 (Python 3.11 bundles 3.40 and newer).
ALTER TABLE model_versions DROP COLUMN test_accuracy;
