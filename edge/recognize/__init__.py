"""Face recognition, opt-in: 5 landmarks -> aligned chip -> 128-D descriptor -> distances.

A stage of its own (see ../shared/design.md, "who is there"): the detector knows nothing of
it. Pure numpy on the device, except the descriptor network, which runs in the project's
TFLite interpreter. Modules:

- :mod:`edge.recognize.landmarks`: dlib's 5-point shape predictor (regression trees);
- :mod:`edge.recognize.align`: dlib's 150x150 face chip (similarity transform, warp);
- :mod:`edge.recognize.embed`: the descriptor network and distances between descriptors;
- :mod:`edge.recognize.describe`: the three above for one detected face;
- :mod:`edge.recognize.gallery`: the known people's descriptors (one 0600 file);
- :mod:`edge.recognize.people`: ``edge-face enroll`` and ``edge-face people``;
- :mod:`edge.recognize.identity`: who a track is, voted over several of its views;
- :mod:`edge.recognize.settings`: the daemon's ``[recognition]`` section;
- :mod:`edge.recognize.stage`: the daemon's recognition of tracked faces, enrolment, forgetting;
- :mod:`edge.recognize.models`: the built model files shipped as package data.
"""
