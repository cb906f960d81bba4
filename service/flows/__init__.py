"""The multi-step work of the service, outside the routes: the only package that imports the
matcher. ``match_run.execute`` is the job every worker runs (snapshot -> match -> persist ->
commit); ``commit_run.commit`` turns an answer into proposals."""
