"""The feedback consumer joins the workflow as subscriptions; no producer changed for it."""

from events.subscriptions import Subscription

SUBSCRIPTIONS = [
    Subscription("freshet.feedback.received", "feedback.handlers.feedback_received", queue="feedback"),
    Subscription("freshet.document.indexed", "feedback.handlers.document_indexed_restore_scores", queue="feedback"),
]
