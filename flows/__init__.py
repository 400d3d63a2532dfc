"""Prefect flows: retraining (every DVC stage in order, the train stage on a GPU pool if asked),
its reports, a cron deployment, and batch scoring."""
