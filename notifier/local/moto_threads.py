"""Fixes to moto for requests served at once: the endpoint serves each request in a thread of
its own, and a service's first requests often come together (a burst of IoT publishes, a
suite's first calls). Each fix keeps moto's behaviour, says what it changes and why, and
can go upstream as is.
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    keep_operation_models_apart_from_botocores()


def keep_operation_models_apart_from_botocores() -> None:
    """moto's ``ServiceModel.operation_model`` wraps botocore's, and both are cached with
    botocore's ``instance_cache`` under the same key: botocore's model is stored first, then
    moto's over it. A request routed by another thread in between is given botocore's model,
    which lacks moto's ``http_trait``: its router fails with an ``AttributeError``, and the
    request with a 500. moto's models are now kept apart, under their own key; botocore's
    stay in botocore's cache, for botocore."""
    from botocore.model import ServiceModel as BotocoreServiceModel
    from moto.core.model import OperationModel, ServiceModel

    def operation_model(self: ServiceModel, operation_name: str) -> OperationModel:
        models: dict[str, OperationModel] = self.__dict__.setdefault("_moto_operation_models", {})
        model = models.get(operation_name)
        if model is None:
            botocores: Any = BotocoreServiceModel.operation_model(self, operation_name)
            made = OperationModel(getattr(botocores, "_operation_model", {}), self, operation_name)
            model = models.setdefault(operation_name, made)
        return model

    ServiceModel.operation_model = operation_model  # type: ignore[method-assign]
