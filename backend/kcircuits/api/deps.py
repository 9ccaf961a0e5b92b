"""Annotated dependency aliases shared by the routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from kcircuits.config import Settings
from kcircuits.jobs import JobManager
from kcircuits.lm.worker import ModelWorker


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_worker(request: Request) -> ModelWorker:
    return request.app.state.worker


def get_jobs(request: Request) -> JobManager:
    return request.app.state.jobs


def get_store(request: Request) -> Any:
    return request.app.state.store


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
WorkerDep = Annotated[ModelWorker, Depends(get_worker)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
StoreDep = Annotated[Any, Depends(get_store)]
