"""Example resource: read-only items."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/items", tags=["items"])


class Item(BaseModel):
    id: int
    name: str


ITEMS = {
    1: Item(id=1, name="hammer"),
    2: Item(id=2, name="screwdriver"),
    3: Item(id=3, name="wrench"),
}


@router.get("/{item_id}")
async def get_item(item_id: int) -> Item:
    item = ITEMS.get(item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="item not found")
    # Event names are `category.action`; fields are fields, never formatted into the name.
    logger.info("item.fetched", extra={"item_id": item_id})
    return item
