"""Load-test a Realtime endpoint with voice-agent users: `locust -f locustfile.py --host <base URL>`.

    rtsim serve --port 8000 &                       # prints http://127.0.0.1:8000/v1
    locust -f locustfile.py --headless -u 200 -r 50 -t 60s --host http://127.0.0.1:8000/v1

Works against rtsim or any Realtime-compatible base URL (your relay in front of rtsim, or the real service
with --api-key). The user's behaviour and the metrics it reports are described in rtsim/clients/load.py;
options: `locust -f locustfile.py --help` (group "rtsim RealtimeUser" options: --model, --auth, --api-key,
--key-per-user, --audio-chunk-ms, --response-timeout, --open-timeout, --backoff-base, --backoff-cap).
"""

from locust import between

from rtsim.clients.load import RealtimeUser


class VoiceAgentUser(RealtimeUser):
    """Four plain turns to one barge-in (the task weights on RealtimeUser); a pause to think between."""

    wait_time = between(0.5, 2.0)
