"""What the two WebSocket consumers (``ws/stream/`` in live, ``ws/rooms/<code>/`` in rooms) share."""
from __future__ import annotations

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer

MAX_PACE_MS = 2000  # the slowest replay a socket may ask for, a token every 2 s
CLOSE_TRY_AGAIN_LATER = 4429  # an application close code: a limit, not an error (1013 is not sendable by browsers' peers)


class DirectDispatch:
    """Hand each message straight to its handler.

    Channels' consumers first run ``close_old_connections`` in a worker thread for every message,
    to recycle database connections. Our handlers reach the database only through
    ``database_sync_to_async``, which does that itself around each call, so the extra thread hop
    per message (per student, per token, in a classroom room) bought nothing and was most of a
    broadcast's cost. Closing a socket skips the same check."""

    async def dispatch(self, message):
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message):
        # as Channels' own, minus the connection check after disconnect() (see above)
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        await self.disconnect(message["code"])
        raise StopConsumer()


def client_address(scope) -> str:
    return (scope.get("client") or ["?"])[0] or "?"
