"""What the tests of our own k8s/ manifests share (test_launcher_k8s.py, test_wise_webhooks_k8s.py).

The manifests are read with `deploy_model.k8s_documents`; this module adds the strict schema
check every manifest test runs, "the one document of this kind", and the production release
(merged prod values and the control-plane pods the chart renders from them) the manifests are
compared with.
"""

from __future__ import annotations

import kubernetes_validate
import pytest

from arb_orchestration_tests.unit import deploy_model as model


def assert_valid_kubernetes(name: str, version: str) -> None:
    """Every document of k8s/<name> validates against Kubernetes `version` (strict: unknown fields fail)."""
    documents = model.k8s_documents(name)
    assert documents, f"k8s/{name} has no documents"
    for document in documents:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name} {document['kind']}/{document['metadata']['name']}: {error.message} "
                        f"at {list(error.absolute_path)}")


def only_of_kind(files: tuple[str, ...], kind: str) -> dict:
    """The one document of `kind` in these manifests (fails when there are none or several)."""
    (found,) = model.k8s_of_kind(files, kind)
    return found


def prod_release() -> dict:
    """The prod release: its merged values and the control-plane pods rendered from them."""
    values = model.merged_values("prod")
    return {"values": values, "pods": model.control_plane_pods(values)}
