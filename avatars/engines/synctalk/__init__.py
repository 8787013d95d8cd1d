"""SyncTalk plug-in (ZiqiaoPeng/SyncTalk @ d2427a3): ``commands.py`` builds its command lines,
``parsers.py`` reads its consoles, ``engine.py`` is what the platform asks. Platform-side code only."""

from .engine import SyncTalk

ENGINE = SyncTalk()
