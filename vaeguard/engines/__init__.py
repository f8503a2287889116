"""Scoring engines beyond one process: Dask and Spark.

Each engine maps the one pure scoring function (`score_frame`) over the partitions of a
distributed DataFrame, loading the model file once per worker process, so every engine gives
the same scores as the local CLI for the same rows.
"""
