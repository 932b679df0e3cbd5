"""AWS Lambda handler for invoice PDFs; answers health invocations (rendering lands with billing)."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

logger = logging.getLogger()
logger.setLevel(os.environ.get("LOG_LEVEL", "INFO"))


def _bad_request(message: str) -> dict[str, Any]:
    return {"statusCode": 400, "error": message}


def handler(event: Any, context: Any) -> dict[str, Any]:
    if isinstance(event, dict) and event.get("healthcheck") is True:
        return {"statusCode": 200, "status": "ok"}
    logger.info(json.dumps({"msg": "rejected invocation", "reason": "unsupported request"}))
    return _bad_request("unsupported request")
