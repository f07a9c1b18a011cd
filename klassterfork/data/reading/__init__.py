"""Records -> clips: the record stage, bad records, the train and eval pipelines, preflight."""
