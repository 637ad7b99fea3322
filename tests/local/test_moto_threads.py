"""moto's fixes for requests served at once."""

from __future__ import annotations

import botocore.model
import botocore.session
import pytest
from moto.core.model import OperationModel, ServiceModel

from notifier.local import moto_threads


def test_a_service_is_routed_with_motos_operation_model_while_botocores_is_being_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ServiceModel, "operation_model", ServiceModel.operation_model)
    moto_threads.install()
    data = botocore.session.get_session().get_service_data("iot-data")
    model = ServiceModel(data, "iot-data")
    # What another thread's first call has done by the time this one routes a request: made
    # and cached botocore's model, and not yet moto's.
    botocores = botocore.model.ServiceModel.operation_model(model, "Publish")
    assert not isinstance(botocores, OperationModel)
    routed = model.operation_model("Publish")
    assert isinstance(routed, OperationModel)
    assert routed.http_trait.method == "POST"
    assert model.operation_model("Publish") is routed  # made once
