"""The feedback consumer joins the workflow as subscriptions; no producer changed for it."""

from events.subscriptions import Subscription

SUBSCRIPTIONS = [
    Subscription("freshet.feedback.received", "feedback.handlers.feedback_received", queue="feedback"),
    # Only a version that replaced an indexed one: nobody can have voted on a document never indexed.
    Subscription("freshet.document.indexed", "feedback.handlers.document_indexed_restore_scores", queue="feedback",
                 when={"replaced": True}),
]
