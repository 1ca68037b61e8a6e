"""The package logger: a child of ModelScope's ``modelscope`` logger, so its lines appear wherever ModelScope's do
(ModelScope configures that logger with a handler at INFO)."""
import logging

LOGGER_NAME = "modelscope.facemask"
logger = logging.getLogger(LOGGER_NAME)
