from celery import shared_task

from ingestion.search_index import search_index


@shared_task(acks_late=True, ignore_result=True)
def search_index_optimize() -> None:
    """Compact the index and fold new rows into its indexes (LanceDB makes a version per write)."""
    search_index().optimize()
