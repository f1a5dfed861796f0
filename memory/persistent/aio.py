"""The asyncio face of the store: the same methods, run in a worker thread.

Each coroutine calls the synchronous method with the same arguments through
``asyncio.to_thread`` and returns what it returns (the store's lock makes that
safe), so sync and async callers can share one store and see one chain.
"""

from __future__ import annotations

import asyncio


class AsyncStoreMixin:
    async def aput(self, key, value, ctx=None, prev_anchor=None, *, timestamp=None) -> str:
        return await asyncio.to_thread(self.put, key, value, ctx, prev_anchor, timestamp=timestamp)

    async def aput_many(self, keys, values, ctxs=None, prev_anchor=None, *, timestamps=None):
        return await asyncio.to_thread(
            self.put_many, keys, values, ctxs, prev_anchor, timestamps=timestamps
        )

    async def aquery(self, q, k=None, *, now=None, as_of=None):
        return await asyncio.to_thread(self.query, q, k, now=now, as_of=as_of)

    async def aquery_batch(self, queries, k=None, *, now=None, as_of=None):
        return await asyncio.to_thread(self.query_batch, queries, k, now=now, as_of=as_of)

    async def abias_vector(self, q, k=None, *, now=None, as_of=None):
        return await asyncio.to_thread(self.bias_vector, q, k, now=now, as_of=as_of)

    async def abias_vector_batch(self, queries, k=None, *, now=None, as_of=None):
        return await asyncio.to_thread(self.bias_vector_batch, queries, k, now=now, as_of=as_of)
