"""The dashboard's websocket (ws/dashboard/): staff only. On connect it sends a snapshot; then
each batch of events from the live feed (dashboard/live.py) as it comes, and a fresh snapshot at
most every DASHBOARD_SNAPSHOT_SECONDS while events keep coming."""

from __future__ import annotations

import asyncio
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from dashboard.live import GROUP
from dashboard.selectors import dashboard_snapshot


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_active or not user.is_staff:
            await self.close(code=4403)
            return
        self.refresh: asyncio.Task | None = None
        self.sent_at = 0.0
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()
        await self.snapshot_send()

    async def disconnect(self, code) -> None:
        refresh = getattr(self, "refresh", None)
        if refresh is not None:
            refresh.cancel()
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        if isinstance(content, dict) and content.get("type") == "refresh":
            await self.snapshot_send()

    async def dashboard_events(self, message: dict) -> None:
        await self.send_json({"type": "events", "events": message.get("events", []),
                              "dropped": message.get("dropped", 0)})
        if self.refresh is None or self.refresh.done():
            self.refresh = asyncio.create_task(self.snapshot_later())

    async def snapshot_later(self) -> None:
        wait = self.sent_at + settings.DASHBOARD_SNAPSHOT_SECONDS - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await self.snapshot_send()

    async def snapshot_send(self) -> None:
        self.sent_at = time.monotonic()
        snapshot = await database_sync_to_async(dashboard_snapshot)()
        await self.send_json({"type": "snapshot", "snapshot": snapshot})
