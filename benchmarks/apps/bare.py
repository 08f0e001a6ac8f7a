"""The baseline: the benchmark's route on FastAPI alone, without any telemetry."""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class Item(BaseModel):
    id: int
    name: str


ITEMS = {1: Item(id=1, name="hammer"), 2: Item(id=2, name="screwdriver")}

# FastAPI's built-in OpenTelemetry stays off, so nothing here measures telemetry.
app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> Item:
    item = ITEMS.get(item_id)
    if item is None:
        raise HTTPException(404, detail="item not found")
    return item


@app.get("/deep")
async def deep() -> dict[str, int]:
    return {"steps": 2}
