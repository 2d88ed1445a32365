"""The OpenAPI side of the ingestion API (drf-spectacular): what each error status means, the
headers documented on responses."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from ingestion.serializers import ErrorSerializer

ERROR_MEANINGS = {
    400: "Invalid input; `detail` says which field and why, `errors` lists the messages by field.",
    401: "Not authenticated: send 'Authorization: Token <key>' or sign in.",
    403: "Authenticated, but only staff may do this.",
    404: "No such object, or one you may not see.",
    413: "A file is over MAX_UPLOAD_BYTES, or the body over the endpoint's limit.",
    415: "Unsupported: a file whose content is not an allowed type (detected from the content, not the "
         "name), or a request body in a format this endpoint does not read.",
    429: "Too many requests; retry after the number of seconds in Retry-After.",
}
# What 403 means where documents are replaced or deleted.
DOCUMENT_FORBIDDEN_MEANING = ("You may see the document but not change it: only its uploader, the editors of its "
                               "source (`editor_groups`) and staff may replace or delete it.")

RETRY_AFTER = OpenApiParameter(
    "Retry-After", OpenApiTypes.INT, location=OpenApiParameter.HEADER, response=[429], required=True,
    description="Seconds to wait before the next request.",
)
WWW_AUTHENTICATE = OpenApiParameter(
    "WWW-Authenticate", OpenApiTypes.STR, location=OpenApiParameter.HEADER, response=[401],
    description="The authentication scheme to use (Token).",
)


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorSerializer, description=ERROR_MEANINGS[code]) for code in codes}


DOCUMENT_FORBIDDEN = OpenApiResponse(ErrorSerializer, description=DOCUMENT_FORBIDDEN_MEANING)
