"""/dashboard/ (the page and its JSON snapshot) for staff."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.selectors import dashboard_snapshot


@require_GET
@staff_member_required
def dashboard_page(request):
    return render(request, "dashboard/dashboard.html", {"snapshot": dashboard_snapshot(),
                                                        "title": "Pipeline dashboard"})


@require_GET
@staff_member_required
def dashboard_data(request):
    return JsonResponse(dashboard_snapshot())
