"""Web sync: a 1,000-page sitemap served on loopback, synced through the `sync` queue's tasks.

1. Nothing changed: how long a re-sync takes (sitemap fetched and diffed, no page fetched: every
   lastmod is the stored marker) and how many pipeline tasks it starts (events of the pipeline
   `freshet.document.*` recorded meanwhile). Targets: <= 30 s, zero.
2. One page changed (its text and lastmod): the time from triggering a sync to its new text being
   retrievable, p50/p95 over --changes pages. Target p95 <= 3 s.

It starts its own worker in a scratch folder (SQLite + LanceDB under a temporary var/), as
`make run` would run them, with WEB_HOST_DELAY=0 (the server is local; the default 0.25 s would
measure the politeness delay, not Freshet).

    .venv/bin/python benchmarks/sync_web.py [--pages 1000] [--changes 20]
"""

from __future__ import annotations

import argparse
import os
import time

from _stack import ROOT, django_setup, percentile, worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900.0, help="Give up on the first sync after this long.")
    args = parser.parse_args()

    os.environ["WEB_HOST_DELAY"] = "0"
    env = django_setup(isolated=True)
    env["WEB_HOST_DELAY"] = "0"
    from chat.retrieval import retrieve
    from events.models import Event
    from ingestion.connectors.sync import source_sync_request
    from ingestion.models import Document, Source, SyncRun
    from ingestion.search_index import AccessFilter
    from tests.ingestion.connectors.websites import Website, html_page, sitemap_xml

    site = Website()
    lastmods = {n: "2026-01-01T00:00:00+00:00" for n in range(args.pages)}
    texts = {n: f"Page {n} describes how valve station vs{n}q is inspected and maintained through the year."
             for n in range(args.pages)}

    def publish(n: int | None = None) -> None:
        for page in ([n] if n is not None else range(args.pages)):
            site.page(f"/p/{page}", html_page(f"Valve station {page}", texts[page]))
        site.page("/sitemap.xml", sitemap_xml([(site.url(f"/p/{p}"), lastmods[p]) for p in range(args.pages)]),
                  content_type="application/xml")

    def synced(source: Source) -> tuple[SyncRun, float]:
        started = time.perf_counter()
        run = source_sync_request(source, trigger="benchmark")
        while run.status == SyncRun.Status.RUNNING:
            time.sleep(0.02)
            run.refresh_from_db()
        return run, time.perf_counter() - started

    publish()
    with worker(env, log=ROOT / "var" / "bench-sync-web-worker.log" if (ROOT / "var").exists() else None):
        source = Source.objects.create(name=f"bench-sitemap-{os.getpid()}", kind=Source.Kind.SITEMAP,
                                       config={"url": site.url("/sitemap.xml")})
        started = time.perf_counter()
        run, _ = synced(source)
        deadline = time.monotonic() + args.timeout
        while Document.objects.filter(source=source).exclude(status__in=["indexed", "failed"]).exists():
            if time.monotonic() > deadline:
                raise SystemExit("The first sync's documents were not indexed in time.")
            time.sleep(0.5)
        print(f"first sync: {run.items_new} new, {run.items_failed} failed, all indexed in "
              f"{time.perf_counter() - started:.1f} s")

        before = Event.objects.filter(type__startswith="freshet.document.").count()
        run, seconds = synced(source)
        time.sleep(2)  # anything the re-sync queued would be recorded by now
        tasks = Event.objects.filter(type__startswith="freshet.document.").count() - before
        print(f"re-sync, nothing changed: {seconds:.2f} s ({run.items_seen} seen, {run.items_unchanged} "
              f"unchanged), pipeline events: {tasks}  (targets: <= 30 s, 0)")

        latencies = []
        for i in range(args.changes):
            page = (i * 37) % args.pages
            phrase = f"zx{os.getpid()}c{i}"
            texts[page] = f"Page {page} now says valve station {phrase} is inspected each spring."
            lastmods[page] = f"2026-02-{1 + i % 27:02d}T00:00:00+00:00"
            publish(page)
            started = time.perf_counter()
            source_sync_request(source, trigger="benchmark")
            while True:
                hits = retrieve(phrase, access=AccessFilter.staff(), k=1, mode="bm25")
                if hits and phrase in hits[0].text:
                    break
                if time.perf_counter() - started > 60:
                    raise SystemExit(f"page {page} was not retrievable after 60 s")
                time.sleep(0.02)
            latencies.append(time.perf_counter() - started)
            while SyncRun.objects.filter(source=source, status=SyncRun.Status.RUNNING).exists():
                time.sleep(0.02)
        print(f"changed page -> retrievable after a triggered sync, {len(latencies)} pages: "
              f"p50 {percentile(latencies, 50):.2f} s, p95 {percentile(latencies, 95):.2f} s  (target p95 <= 3 s)")
    site.close()


if __name__ == "__main__":
    main()
