"""The service's own endpoints."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_get_item(client: TestClient) -> None:
    response = client.get("/items/1")
    assert response.status_code == 200
    assert response.json() == {"id": 1, "name": "hammer"}


def test_unknown_item_is_404(client: TestClient) -> None:
    assert client.get("/items/999").status_code == 404
