"""Offline build of the face-recognition models (see :mod:`tools.recognize_build.build`)."""
