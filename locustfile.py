"""Load-test a Realtime endpoint with voice-agent users: `locust -f locustfile.py --host <base URL>`.

    rtsim serve --port 8000 &                       # prints http://127.0.0.1:8000/v1
    locust -f locustfile.py --headless -u 200 -r 50 -t 60s --host http://127.0.0.1:8000/v1

Works against rtsim or any Realtime-compatible base URL (your relay in front of rtsim, or the real service
with --api-key). What a user does and the metrics it reports: rtsim/clients/load.py (clients/load.py in the
repository). Its options (`add_options` there; locust's --help does not list a locustfile's own): --model,
--auth, --api-key, --key-per-user, --audio-chunk-ms, --response-timeout, --open-timeout, --backoff-base,
--backoff-cap, --max-attempts, --stable-after, --seed.
"""

from locust import between

from rtsim.clients.load import RealtimeUser


class VoiceAgentUser(RealtimeUser):
    """A plain turn four times in five, a barge-in once; a pause to think between turns.

    To change the mix: `tasks = {RealtimeUser.conversation_turn: 9, RealtimeUser.barge_in: 1}`.
    """

    wait_time = between(0.5, 2.0)
    barge_in_after = (0.3, 1.0)
