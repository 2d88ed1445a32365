"""The ingestion pipeline: stages.py (what each stage does to a document), batching.py (claim
sets and batches for the embed and index stages), handoff.py (the vectors between them),
recovery.py (the sweeps that leave no document stuck). The workflow itself is the subscription
table in ingestion/subscriptions.py; the event handlers are in ingestion/handlers.py."""
