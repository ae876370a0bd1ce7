"""Generate a synthetic Sparkify input root: ``song_data/`` and ``log_data/``.

The records copy the shapes of the real inputs (Million Song Dataset song files and
Eventsim logs) byte for byte, so the ETL job can be tested and benchmarked at any size
without shipping or downloading the real data. Standard library only, deterministic:
the same arguments always produce byte-identical files.

    python tools/generate_data.py --songs 10000 --events 1000000 --seed 1 --out /tmp/in
"""

from __future__ import annotations

import argparse
import bisect
import calendar
import datetime as dt
import itertools
import json
import math
import random
import shutil
import string
import sys
import time
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

LAYOUTS = ("flat", "s3")
SONG_DIR = "song_data"
LOG_DIR = "log_data"
SECONDS_PER_DAY = 86_400

# --- song catalogue -----------------------------------------------------------------
# Fractions measured on the 14,896 songs of the public course bucket, rounded.
YEAR_UNKNOWN_P = 0.45
YEAR_RANGE = (1927, 2010)
LOCATION_EMPTY_P = 0.45
COORDS_MISSING_P = 0.35  # of the artists that do have a location
# Chances per song (beyond an artist's first) of the MSD inconsistencies the job
# must tolerate: a credited name, a different location, the same title re-released.
NAME_VARIANT_P = 0.08
LOCATION_VARIANT_P = 0.05
SAME_TITLE_P = 0.04
SONGS_PER_ARTIST_MAX = 12
SONGS_PER_ARTIST_EXPONENT = 2.2  # P(k songs) ~ k^-2.2: 2/3 of artists have one song
# --songs-per-artist MEAN instead draws each artist's song count from a log-normal with
# that mean (the whole MSD: 1M songs by 44,745 artists, 22 per artist), so a large
# catalogue has a realistic number of artists (artists table, songs folders per artist).
SONGS_PER_ARTIST_SIGMA = 1.0
SONGS_PER_ARTIST_CAP = 20  # times the mean: one artist never holds a large share
DURATION_MEDIAN_S = 230.0
DURATION_SIGMA = 0.42
DURATION_RANGE_S = (6.0, 2700.0)
# The public bucket holds only track ids starting "TRA": song_data/A/<A-Z>/<A-Z>/.
TRACK_ID_PREFIX = "TRA"
TRACK_ID_MIDDLES = ("128F4", "128F9", "128F1", "12903", "128E0", "12903")
SONG_ID_MIDDLES = ("12A", "12A", "12A", "12A", "12B")
ARTIST_ID_MIDDLES = ("1187B9", "1187FB", "1187FB", "1187B9", "11F4", "11C8", "11E2")
ID_LENGTH = 18
ARTIST_NAME_TRIES = 50  # then a numbered name: see _unique
HEX = "0123456789ABCDEF"
ALNUM = string.ascii_uppercase + string.digits

# --- event log ----------------------------------------------------------------------
EVENTS_PER_USER = 80  # the real month: 8,056 events by 97 users
MIN_USERS = 10
USER_ACTIVITY_EXPONENT = 0.8  # Zipf weight of a user's share of sessions
FREE_AT_START_P = 0.3
FEMALE_P = 0.6
REGISTRATION_MAX_AGE_DAYS = 120
SESSION_ITEMS_MU = 1.6  # log-normal: median 5 events, mean ~10, long tail
SESSION_ITEMS_SIGMA = 1.1
SESSION_ITEMS_MAX = 200
FREE_USER_TRIES = 20  # then the session goes to an anonymous visitor
START_LOGGED_OUT_P = 0.08
LOGOUT_RELOGIN_P = 0.6
SUBMIT_UPGRADE_P = 0.4
SUBMIT_DOWNGRADE_P = 0.08
SAVE_SETTINGS_P = 0.2
FIRST_PAGE_HOME_P = 0.35
NEXT_SONG_P = 0.88
CATALOGUE_PLAY_P = 0.33
SONG_POPULARITY_EXPONENT = 0.9
SKIP_P = 0.05  # the next song starts before the current one ends
INVENTED_POOL_MIN = 300
EVENTS_PER_INVENTED_SONG = 20
INVENTED_POOL_MAX = 40_000
KNOWN_ARTIST_P = 0.15  # invented plays by a catalogue artist, title unknown
COVER_P = 0.05  # invented plays of a catalogue title by another artist
MOJIBAKE_P = 0.5  # Eventsim double-encodes non-ASCII names (Caf\u00c3\u0083\u00c2\u00a9)
DUPLICATE_DEFER_P = 0.5  # the copy lands one line later instead of right after
# The real logs have second resolution plus a constant millisecond offset (…796).
HOUR_WEIGHTS = (3, 2, 1, 1, 1, 1, 2, 3, 4, 5, 5, 6, 6, 6, 6, 6, 7, 8, 9, 9, 9, 8, 6, 4)
DAY_WEIGHT_RANGE = (0.7, 1.3)

# Other pages a logged-in user visits, by level (NextSong is drawn first).
PAGE_WEIGHTS = {
    "free": {
        "Home": 55,
        "Thumbs Up": 10,
        "Thumbs Down": 3,
        "Add to Playlist": 5,
        "Add Friend": 3,
        "Roll Advert": 12,
        "Settings": 4,
        "Help": 3,
        "About": 2,
        "Logout": 6,
        "Error": 1,
        "Upgrade": 6,
    },
    "paid": {
        "Home": 55,
        "Thumbs Up": 10,
        "Thumbs Down": 3,
        "Add to Playlist": 6,
        "Add Friend": 3,
        "Settings": 4,
        "Help": 3,
        "About": 2,
        "Logout": 6,
        "Error": 1,
        "Downgrade": 5,
    },
}
LOGGED_OUT_PAGES = ("Home", "Home", "Home", "About", "Help")
VISITOR_EVENTS_MAX = 4
# method and status of each page, as in the real logs.
PAGE_HTTP = {
    "NextSong": ("PUT", 200),
    "Home": ("GET", 200),
    "Login": ("PUT", 307),
    "Logout": ("PUT", 307),
    "Settings": ("GET", 200),
    "Save Settings": ("PUT", 307),
    "Help": ("GET", 200),
    "About": ("GET", 200),
    "Upgrade": ("GET", 200),
    "Submit Upgrade": ("PUT", 307),
    "Downgrade": ("GET", 200),
    "Submit Downgrade": ("PUT", 307),
    "Error": ("GET", 404),
    "Thumbs Up": ("PUT", 307),
    "Thumbs Down": ("PUT", 307),
    "Add to Playlist": ("PUT", 200),
    "Add Friend": ("PUT", 307),
    "Roll Advert": ("GET", 200),
}
# Pages that follow a click within a second (the real logs: Logout 1 s after Settings).
QUICK_PAGES = frozenset({"Login", "Logout", "Save Settings", "Submit Upgrade", "Submit Downgrade"})
PAGE_GAP_MAX_S = 90

# User agents of the real logs with their frequency. Eventsim wrote them through CSV,
# so the ones containing a comma carry literal surrounding double quotes.
USER_AGENTS = (
    (
        1098,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_4) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36",
    ),
    (
        784,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_4) AppleWebKit/537.78.2 "
        "(KHTML, like Gecko) Version/7.0.6 Safari/537.78.2",
    ),
    (780, "Mozilla/5.0 (Windows NT 5.1; rv:31.0) Gecko/20100101 Firefox/31.0"),
    (
        644,
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Ubuntu Chromium/36.0.1985.125 Chrome/36.0.1985.125 Safari/537.36",
    ),
    (615, "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/37.0.2062.94 Safari/537.36"),
    (499, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.9; rv:31.0) Gecko/20100101 Firefox/31.0"),
    (
        494,
        "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.125 Safari/537.36",
    ),
    (
        486,
        "Mozilla/5.0 (Windows NT 6.3; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36",
    ),
    (
        382,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_4) AppleWebKit/537.77.4 "
        "(KHTML, like Gecko) Version/7.0.5 Safari/537.77.4",
    ),
    (356, "Mozilla/5.0 (Windows NT 6.1; WOW64; rv:31.0) Gecko/20100101 Firefox/31.0"),
    (293, "Mozilla/5.0 (Windows NT 5.1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36"),
    (
        262,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 7_1_2 like Mac OS X) AppleWebKit/537.51.2 "
        "(KHTML, like Gecko) Version/7.0 Mobile/11D257 Safari/9537.53",
    ),
    (
        204,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_10_0) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36",
    ),
    (76, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.9; rv:30.0) Gecko/20100101 Firefox/30.0"),
    (42, "Mozilla/5.0 (Windows NT 6.1; WOW64; rv:32.0) Gecko/20100101 Firefox/32.0"),
    (27, "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko"),
    (12, "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; WOW64; Trident/6.0)"),
    (
        8,
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_6_8) AppleWebKit/534.59.10 "
        "(KHTML, like Gecko) Version/5.1.9 Safari/534.59.10",
    ),
)
USER_LOCATIONS = (
    "San Francisco-Oakland-Hayward, CA",
    "Portland-South Portland, ME",
    "Lansing-East Lansing, MI",
    "Chicago-Naperville-Elgin, IL-IN-WI",
    "Atlanta-Sandy Springs-Roswell, GA",
    "Waterloo-Cedar Falls, IA",
    "Lake Havasu City-Kingman, AZ",
    "San Jose-Sunnyvale-Santa Clara, CA",
    "Tampa-St. Petersburg-Clearwater, FL",
    "New York-Newark-Jersey City, NY-NJ-PA",
    "Sacramento--Roseville--Arden-Arcade, CA",
    "Janesville-Beloit, WI",
    "Birmingham-Hoover, AL",
    "Winston-Salem, NC",
    "Red Bluff, CA",
    "Marinette, WI-MI",
    "Augusta-Richmond County, GA-SC",
    "Houston-The Woodlands-Sugar Land, TX",
    "Detroit-Warren-Dearborn, MI",
    "New Orleans-Metairie, LA",
    "La Crosse-Onalaska, WI-MN",
    "Philadelphia-Camden-Wilmington, PA-NJ-DE-MD",
    "Washington-Arlington-Alexandria, DC-VA-MD-WV",
    "Nashville-Davidson--Murfreesboro--Franklin, TN",
    "Dallas-Fort Worth-Arlington, TX",
    "Minneapolis-St. Paul-Bloomington, MN-WI",
    "Seattle-Tacoma-Bellevue, WA",
    "St. Louis, MO-IL",
    "Los Angeles-Long Beach-Anaheim, CA",
    "Miami-Fort Lauderdale-West Palm Beach, FL",
)
FEMALE_NAMES = (
    "Chloe", "Tegan", "Kate", "Lily", "Aleena", "Jacqueline", "Layla", "Avery", "Sara",
    "Kinsley", "Emily", "Hayden", "Ava", "Isabella", "Mia", "Zoë", "Anabelle", "Elena",
    "Stefany", "Kaylee", "Brynn", "Celeste", "Jordyn", "Wren",
)  # fmt: skip
MALE_NAMES = (
    "Mohammad", "Jacob", "Matthew", "Jayden", "Rylan", "Ryan", "Harper", "Aiden",
    "Connar", "Cienna", "Lucas", "Noah", "Liam", "Kevin", "Theodore", "Sebastian",
    "Colm", "Santiago", "Wyatt", "Evan",
)  # fmt: skip
LAST_NAMES = (
    "Bell", "Klein", "Levine", "Harrell", "Koch", "Moore", "Cruz", "Pham", "Jones",
    "Smith", "Garcia", "Williams", "Kim", "Nguyen", "Robinson", "Schultz", "Larson",
    "O'Brien", "Santos", "Fleming", "Reyes", "Goodwin", "Marshall", "Mcconnell",
    "Martínez", "Henderson", "Lopez", "Porter",
)  # fmt: skip

# Artist locations of the MSD style ("Nashville, TN.", "California - SF") and coords.
ARTIST_LOCATIONS = (
    ("London, England", 51.50632, -0.12714),
    ("Los Angeles, CA", 34.05349, -118.24532),
    ("New York, NY", 40.71455, -74.00712),
    ("Chicago, IL", 41.88415, -87.63241),
    ("California - LA", 34.05349, -118.24532),
    ("NY - New York City", 40.71455, -74.00712),
    ("Detroit, MI", 42.33168, -83.04792),
    ("Brooklyn, NY", 40.65507, -73.94888),
    ("California", 37.27188, -119.27023),
    ("Nashville, TN.", 36.16778, -86.77836),
    ("California - SF", 37.77916, -122.42005),
    ("Texas", 31.1689, -100.07715),
    ("Seattle, WA", 47.60356, -122.32944),
    ("Boston, MA", 42.31256, -71.08868),
    ("Philadelphia, PA", 39.95227, -75.16237),
    ("Paris, France", 48.85692, 2.34121),
    ("Stockholm, Sweden", 59.33217, 18.06243),
    ("Berlin, Germany", 52.51607, 13.37698),
    ("Kingston, Jamaica", 17.99702, -76.79358),
    ("São Paulo, Brazil", -23.56287, -46.65467),
    ("Reykjavík, Iceland", 64.13548, -21.89541),
    ("Montréal, Québec, Canada", 45.51228, -73.55439),
    ("Tokyo, Japan", 35.68056, 139.76832),
    ("Melbourne, Australia", -37.81753, 144.96715),
    ("Atlanta, GA", 33.74831, -84.39111),
    ("Hamilton, OH", 39.40008, -84.56264),
    ("Dublin, Ireland", 53.34376, -6.24953),
    ("Mexico City, Mexico", 19.43205, -99.13325),
)
WORDS = (
    "Love", "Night", "Heart", "Fire", "Rain", "City", "Dream", "Road", "Light", "Girl",
    "Soul", "Time", "Blue", "Home", "River", "Moon", "Summer", "Ghost", "Gun", "Angel",
    "Shadow", "Train", "Sister", "Miami", "Lion", "Machine", "Winter", "Paper", "Stone",
    "Money", "Storm", "Mirror", "Sugar", "Thunder", "Wolf", "Ocean", "Highway", "Echo",
    "Dancer", "Coffee", "Tiger", "Velvet", "Electric", "Golden", "Broken", "Silent",
    "Lonely", "Wild", "Crazy", "Sweet", "Dark", "Little", "Last", "Lost", "Burning",
    "Forever", "Midnight", "Rock", "Bass", "Honey", "Satellite", "Kingdom",
)  # fmt: skip
FOREIGN_WORDS = (
    "Corazón", "Noël", "Fräulein", "Mañana", "Déjà", "Kärlek", "Straße", "Señorita",
    "Café", "Niño", "Über", "Ändert", "País", "Santafè", "Kuusikymmentäkaksi", "Ōkami",
    "Łódź", "Москва", "東京", "Mägo", "Été", "Jalapeño", "Smörgås", "Naïve",
)  # fmt: skip
VERBS = (
    "Don't Stop", "Take Me", "Hold On", "I Want", "Let Her Go", "Come Back", "Running",
    "Waiting For", "Dancing With", "Won't Go", "Tell Me", "Breaking", "Say You",
    "Remember", "Calling", "Falling For", "Kiss", "Save",
)  # fmt: skip
TITLE_SUFFIXES = (
    " (Album Version)", " (Live)", " (Remix)", " (Radio Edit)", " (Acoustic)",
    " (LP Version)", " (Feat: {guest})", " (full-length/album version)", "?", "!",
    " Part 2", "_ Op. 11_ No. 2", " (From \"{word} Nights\")", " / {word}",
)  # fmt: skip
TITLE_SUFFIX_P = 0.25
FOREIGN_WORD_P = 0.06
BAND_PATTERNS = (
    "The {a} {b}s", "{a} {b}", "{a}", "DJ {a}", "{a} & The {b}s", "{first} {last}",
    "{first} {last}", "{first} {last} Trio", "{a}{b}", "Los {a}s", "{a} Orchestra",
    "MC {a}", "{first} and the {b}s",
)  # fmt: skip
NAME_VARIANTS = ("{name} featuring {guest}", "{name} feat. {guest}", "{name} & {guest}")


@dataclass(frozen=True)
class Summary:
    """What was written; printed as the one summary line."""

    songs: int
    song_files: int
    artists: int
    events: int
    duplicates: int
    next_song: int
    catalogue_plays: int
    seconds: float

    def line(self) -> str:
        return (
            f"songs={self.songs} song_files={self.song_files} artists={self.artists} "
            f"events={self.events} duplicates={self.duplicates} "
            f"next_song={self.next_song} catalogue_plays={self.catalogue_plays} "
            f"seconds={self.seconds:.2f}"
        )


def _log_json(value) -> str:
    """Serialise like Eventsim: compact, ASCII-escaped, and with ``/`` escaped as ``\\/``."""
    return json.dumps(value, separators=(",", ":")).replace("/", "\\/")


def _mojibake(text: str) -> str:
    """Double-encode UTF-8 through Latin-1, as the real logs do ("Café" -> "CafÃ\x83Â©")."""
    for _ in range(2):
        text = text.encode("utf-8").decode("latin-1")
    return text


def _code(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choices(alphabet, k=length))


class _Names:
    """Invents artist names and titles; one instance per RNG so results replay."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def word(self) -> str:
        rng = self.rng
        return rng.choice(FOREIGN_WORDS if rng.random() < FOREIGN_WORD_P else WORDS)

    def person(self) -> tuple[str, str]:
        rng = self.rng
        return rng.choice(FEMALE_NAMES + MALE_NAMES), rng.choice(LAST_NAMES)

    def artist(self) -> str:
        first, last = self.person()
        pattern = self.rng.choice(BAND_PATTERNS)
        return pattern.format(a=self.word(), b=self.word(), first=first, last=last)

    def title(self) -> str:
        rng = self.rng
        shape = rng.randrange(4)
        if shape == 0:
            title = f"{rng.choice(VERBS)} {self.word()}"
        elif shape == 1:
            title = f"{self.word()} Of The {self.word()}"
        elif shape == 2:
            title = f"{self.word()} {self.word()}"
        else:
            title = self.word()
        if rng.random() < TITLE_SUFFIX_P:
            title += rng.choice(TITLE_SUFFIXES).format(guest=self.artist(), word=self.word())
        return title

    def duration(self) -> float:
        low, high = DURATION_RANGE_S
        seconds = self.rng.lognormvariate(0, DURATION_SIGMA) * DURATION_MEDIAN_S
        return round(min(max(seconds, low), high), 5)


def _songs_per_artist(rng: random.Random, mean: float | None = None) -> int:
    """Songs of the next artist: the course bucket's short tail, or a log-normal of ``mean``."""
    if mean is None:
        counts = range(1, SONGS_PER_ARTIST_MAX + 1)
        return rng.choices(counts, [k**-SONGS_PER_ARTIST_EXPONENT for k in counts])[0]
    mu = math.log(mean) - SONGS_PER_ARTIST_SIGMA**2 / 2  # E[lognormal] = exp(mu + sigma^2 / 2)
    drawn = round(rng.lognormvariate(mu, SONGS_PER_ARTIST_SIGMA))
    return min(max(1, drawn), math.ceil(SONGS_PER_ARTIST_CAP * mean))


def _unique(make, taken: set, tries: int | None = None) -> str:
    """Draw from ``make`` until the value is new (IDs and names must not collide).

    With ``tries``, a value still taken after that many draws gets the first free
    numbered suffix ("Velvet Wolf 2"): the invented names run out at about 60,000
    artists, and fewer tries than that never change the output of a smaller catalogue.
    """
    for _ in itertools.count() if tries is None else range(tries):
        value = make()
        if value not in taken:
            taken.add(value)
            return value
    number = 2
    while f"{value} {number}" in taken:
        number += 1
    taken.add(f"{value} {number}")
    return f"{value} {number}"


def build_catalogue(n_songs: int, seed: int, songs_per_artist: float | None = None) -> list[tuple[str, dict]]:
    """Return ``(track_id, record)`` pairs in MSD key order, sorted by track id.

    ``songs_per_artist`` (a mean) replaces the default short-tailed draw; see _songs_per_artist.
    """
    rng = random.Random(f"{seed}:catalogue")
    names = _Names(rng)
    track_ids, song_ids, artist_ids, artist_names = set(), set(), set(), set()
    songs: list[tuple[str, dict]] = []
    while len(songs) < n_songs:
        artist_id = _unique(lambda: _artist_id(rng), artist_ids)
        name = _unique(names.artist, artist_names, ARTIST_NAME_TRIES)
        location, lat, lon = "", None, None
        if rng.random() >= LOCATION_EMPTY_P:
            location, lat, lon = rng.choice(ARTIST_LOCATIONS)
            if rng.random() < COORDS_MISSING_P:
                lat = lon = None
        titles: list[str] = []  # a list: choosing from a set would not replay
        title_set: set[str] = set()
        for index in range(min(_songs_per_artist(rng, songs_per_artist), n_songs - len(songs))):
            song_name, song_loc, song_lat, song_lon = name, location, lat, lon
            if index and rng.random() < NAME_VARIANT_P:
                variant = rng.choice(NAME_VARIANTS)
                song_name = variant.format(name=name, guest=names.artist())
            if index and rng.random() < LOCATION_VARIANT_P:
                song_loc, song_lat, song_lon = rng.choice(ARTIST_LOCATIONS)
            if index and rng.random() < SAME_TITLE_P:
                title, song_name = rng.choice(titles), name
            else:
                title = _unique(names.title, title_set)
            titles.append(title)
            track_id = _unique(lambda: _track_id(rng), track_ids)
            song_id = _unique(lambda: _song_id(rng), song_ids)
            year = 0 if rng.random() < YEAR_UNKNOWN_P else _recent_year(rng)
            record = {
                "num_songs": 1,
                "artist_id": artist_id,
                "artist_latitude": song_lat,
                "artist_longitude": song_lon,
                "artist_location": song_loc,
                "artist_name": song_name,
                "song_id": song_id,
                "title": title,
                "duration": names.duration(),
                "year": year,
            }
            songs.append((track_id, record))
    songs.sort(key=lambda pair: pair[0])
    return songs


def _artist_id(rng: random.Random) -> str:
    head = "AR" + _code(rng, ALNUM, 5) + rng.choice(ARTIST_ID_MIDDLES)
    return head + _code(rng, HEX, ID_LENGTH - len(head))


def _song_id(rng: random.Random) -> str:
    head = "SO" + _code(rng, string.ascii_uppercase, 5) + rng.choice(SONG_ID_MIDDLES)
    return head + _code(rng, HEX, ID_LENGTH - len(head))


def _track_id(rng: random.Random) -> str:
    head = TRACK_ID_PREFIX + _code(rng, string.ascii_uppercase, 4)
    head += rng.choice(TRACK_ID_MIDDLES)
    return head + _code(rng, HEX, ID_LENGTH - len(head))


def _recent_year(rng: random.Random) -> int:
    """Skew release years towards the 2000s like the MSD."""
    low, high = YEAR_RANGE
    return high - int((high - low) * rng.random() ** 2.5)


def write_songs(root: Path, catalogue: list[tuple[str, dict]], per_file: int) -> int:
    """Write MSD files at song_data/<c3>/<c4>/<c5>/<TRACKID>.json; return file count."""
    files = 0
    for first in range(0, len(catalogue), per_file):
        chunk = catalogue[first : first + per_file]
        track_id = chunk[0][0]
        folder = root / SONG_DIR / track_id[2] / track_id[3] / track_id[4]
        folder.mkdir(parents=True, exist_ok=True)
        text = "\n".join(json.dumps(record) for _, record in chunk)
        (folder / f"{track_id}.json").write_bytes(text.encode("ascii"))
        files += 1
    return files


@dataclass
class _User:
    """A listener; the ``*_json`` parts are pre-serialised fragments of the event line."""

    names_json: str
    last_json: str
    location_json: str
    registration_json: str
    tail_json: str
    level: str
    busy_until: int = 0


# Fragments of a logged-out event: the real logs null every personal field.
_ANONYMOUS = _User(
    names_json='"firstName":null,"gender":null',
    last_json='"lastName":null',
    location_json='"location":null',
    registration_json='"registration":null',
    tail_json='"userAgent":null,"userId":""',
    level="free",
)


class _EventLog:
    """Simulates listener sessions day by day and writes one events file per day."""

    def __init__(self, root, catalogue, n_events, seed, layout, start, days, dup_rate):
        self.rng = random.Random(f"{seed}:events")
        self.dup_rng = random.Random(f"{seed}:duplicates")
        self.root, self.layout, self.start, self.days = root, layout, start, days
        self.n_events, self.dup_rate = n_events, dup_rate
        self.start_s = calendar.timegm(start.timetuple())
        self.end_s = self.start_s + days * SECONDS_PER_DAY
        self.ms_offset = self.rng.randrange(1000)
        self.session_id = 0
        self.seq = 0
        self.next_song = self.catalogue_plays = self.duplicates = 0
        self.buckets: dict[int, list] = {}
        self.written_days = 0
        self._build_songs(catalogue)
        self._build_users()
        self.page_tables = {
            level: (list(weights), list(accumulate(weights.values()))) for level, weights in PAGE_WEIGHTS.items()
        }
        self.page_frags = {page: f'"method":"{method}","page":"{page}"' for page, (method, _) in PAGE_HTTP.items()}

    # --- set-up ----------------------------------------------------------------------
    def _build_songs(self, catalogue):
        """Pre-serialise (artist, song, length) of catalogue and invented plays."""
        rng = self.rng
        names = _Names(rng)
        records = [record for _, record in catalogue]
        rng.shuffle(records)  # popularity must not follow track-id order
        self.catalogue = [self._play(r["artist_name"], r["title"], r["duration"]) for r in records]
        self.catalogue_cum = _zipf_cum(len(records), SONG_POPULARITY_EXPONENT)
        taken = {(r["title"], r["artist_name"]) for r in records}
        artists = sorted({r["artist_name"] for r in records})
        titles = sorted({r["title"] for r in records})
        pool_size = min(INVENTED_POOL_MAX, max(INVENTED_POOL_MIN, self.n_events // EVENTS_PER_INVENTED_SONG))
        invented_artists = [names.artist() for _ in range(max(1, pool_size // 3))]
        self.invented = []
        while len(self.invented) < pool_size:
            draw = rng.random()
            if draw < KNOWN_ARTIST_P:
                artist, title = rng.choice(artists), names.title()
            elif draw < KNOWN_ARTIST_P + COVER_P:
                artist, title = rng.choice(invented_artists), rng.choice(titles)
            else:
                artist, title = rng.choice(invented_artists), names.title()
            if (title, artist) in taken:
                continue
            if not (artist + title).isascii() and rng.random() < MOJIBAKE_P:
                artist, title = _mojibake(artist), _mojibake(title)
            self.invented.append(self._play(artist, title, names.duration()))
        self.invented_cum = _zipf_cum(pool_size, SONG_POPULARITY_EXPONENT)

    @staticmethod
    def _play(artist: str, title: str, length: float) -> tuple[str, str, str, int]:
        return _log_json(artist), _log_json(title), repr(length), int(length)

    def _build_users(self):
        rng = self.rng
        n_users = max(MIN_USERS, self.n_events // EVENTS_PER_USER)
        user_ids = rng.sample(range(2, 2 + n_users + n_users // 10 + 1), n_users)
        agent_weights = [weight for weight, _ in USER_AGENTS]
        self.users = []
        for user_id in user_ids:
            female = rng.random() < FEMALE_P
            first = rng.choice(FEMALE_NAMES if female else MALE_NAMES)
            agent = rng.choices(USER_AGENTS, agent_weights)[0][1]
            if "," in agent:
                agent = f'"{agent}"'
            age_s = rng.randrange(SECONDS_PER_DAY, REGISTRATION_MAX_AGE_DAYS * SECONDS_PER_DAY)
            registration = float((self.start_s - age_s) * 1000 + self.ms_offset)
            self.users.append(
                _User(
                    names_json=f'"firstName":{_log_json(first)},"gender":"{"F" if female else "M"}"',
                    last_json=f'"lastName":{_log_json(rng.choice(LAST_NAMES))}',
                    location_json=f'"location":{_log_json(rng.choice(USER_LOCATIONS))}',
                    registration_json=f'"registration":{registration!r}',
                    tail_json=f'"userAgent":{_log_json(agent)},"userId":"{user_id}"',
                    level="free" if rng.random() < FREE_AT_START_P else "paid",
                )
            )
        self.users_cum = _zipf_cum(n_users, USER_ACTIVITY_EXPONENT)

    # --- simulation ------------------------------------------------------------------
    def run(self) -> None:
        rng = self.rng
        day_weights = [rng.uniform(*DAY_WEIGHT_RANGE) for _ in range(self.days)]
        total = sum(day_weights)
        cum = [round(self.n_events * c / total) for c in accumulate(day_weights)]
        budgets = [b - a for a, b in zip([0, *cum], cum)]
        for day, budget in enumerate(budgets):
            self._flush(before=day)
            day_start = self.start_s + day * SECONDS_PER_DAY
            while budget > 0:  # sessions cut short at the period end leave a rest
                lengths, planned = [], 0
                while planned < budget:
                    lengths.append(self._session_items(budget - planned))
                    planned += lengths[-1]
                starts = sorted(day_start + self._time_of_day() for _ in lengths)
                for start, items in zip(starts, lengths):
                    budget -= self._session(start, items)
        self._flush(before=self.days)

    def _session_items(self, cap: int) -> int:
        items = int(self.rng.lognormvariate(SESSION_ITEMS_MU, SESSION_ITEMS_SIGMA))
        return max(1, min(items, SESSION_ITEMS_MAX, cap))

    def _time_of_day(self) -> int:
        hour = self.rng.choices(range(24), HOUR_WEIGHTS)[0]
        return hour * 3600 + self.rng.randrange(3600)

    def _pick_user(self, start: int) -> _User | None:
        rng, users, cum = self.rng, self.users, self.users_cum
        for _ in range(FREE_USER_TRIES):
            user = users[bisect.bisect(cum, rng.random() * cum[-1])]
            if user.busy_until < start:
                return user
        return None

    def _session(self, start: int, items: int) -> int:
        """Emit up to ``items`` events of one session; return how many were emitted."""
        rng = self.rng
        self.session_id += 1
        user = self._pick_user(start)
        state = _SessionState(self, user or _ANONYMOUS, start, items)
        if user is None:  # a visitor who never logs in
            for _ in range(min(items, VISITOR_EVENTS_MAX)):
                state.emit(rng.choice(LOGGED_OUT_PAGES), logged_in=False)
            return state.item
        if rng.random() < START_LOGGED_OUT_P:
            state.emit("Home", logged_in=False)
            state.emit("Login", logged_in=False)
        if rng.random() < FIRST_PAGE_HOME_P:
            state.emit("Home")
        free_pages, free_cum = self.page_tables["free"]
        paid_pages, paid_cum = self.page_tables["paid"]
        while not state.done():
            if rng.random() < NEXT_SONG_P:
                state.play()
                continue
            pages, cum = (free_pages, free_cum) if user.level == "free" else (paid_pages, paid_cum)
            page = pages[bisect.bisect(cum, rng.random() * cum[-1])]
            state.emit(page)
            if page == "Upgrade" and rng.random() < SUBMIT_UPGRADE_P:
                if state.emit("Submit Upgrade"):
                    user.level = "paid"  # from the next event on, as in the real logs
            elif page == "Downgrade" and rng.random() < SUBMIT_DOWNGRADE_P:
                if state.emit("Submit Downgrade"):
                    user.level = "free"
            elif page == "Settings" and rng.random() < SAVE_SETTINGS_P:
                state.emit("Save Settings")
            elif page == "Logout":
                state.emit("Home", logged_in=False)
                if rng.random() >= LOGOUT_RELOGIN_P:
                    break
                state.emit("Login", logged_in=False)
        user.busy_until = state.t
        return state.item

    def _add(self, ts_s: int, line: str) -> None:
        day = (ts_s - self.start_s) // SECONDS_PER_DAY
        self.seq += 1
        self.buckets.setdefault(day, []).append((ts_s, self.seq, line))

    # --- output ----------------------------------------------------------------------
    def _flush(self, before: int) -> None:
        """Write every finished day (no later session can reach it) in ts order."""
        for day in range(self.written_days, before):
            rows = sorted(self.buckets.pop(day, ()))
            self._write_day(day, [line for _, _, line in rows])
        self.written_days = max(self.written_days, before)

    def _write_day(self, day: int, lines: list[str]) -> None:
        out, deferred = [], None
        rate, dup_rng = self.dup_rate, self.dup_rng
        for line in lines:
            out.append(line)
            if deferred is not None:
                out.append(deferred)
                deferred = None
            if dup_rng.random() < rate:
                self.duplicates += 1
                if dup_rng.random() < DUPLICATE_DEFER_P:
                    deferred = line
                else:
                    out.append(line)
        if deferred is not None:
            out.append(deferred)
        path = self._path(day)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes("\n".join(out).encode("ascii"))

    def _path(self, day: int) -> Path:
        date = self.start + dt.timedelta(days=day)
        name = f"{date.isoformat()}-events.json"
        if self.layout == "s3":
            return self.root / LOG_DIR / f"{date.year:04d}" / f"{date.month:02d}" / name
        return self.root / LOG_DIR / name


class _SessionState:
    """Clock, item counter and login state of the session being simulated."""

    def __init__(self, log: _EventLog, user: _User, start: int, items: int):
        self.log, self.user, self.t, self.items = log, user, start, items
        self.item = 0
        self.sid = str(log.session_id)
        self.ms = f"{log.ms_offset:03d}"

    def done(self) -> bool:
        return self.item >= self.items or self.t >= self.log.end_s

    def emit(self, page: str, logged_in: bool = True, song=None) -> bool:
        """Append one event unless the session is over; say whether it was."""
        if self.done():
            return False
        log, user = self.log, self.user
        who = user if logged_in else _ANONYMOUS
        if song is None:
            artist = title = length = "null"
        else:
            artist, title, length, _ = song
        status = PAGE_HTTP[page][1]
        log._add(
            self.t,
            f'{{"artist":{artist},"auth":"{"Logged In" if logged_in else "Logged Out"}",'
            f'{who.names_json},"itemInSession":{self.item},{who.last_json},'
            f'"length":{length},"level":"{user.level}",{who.location_json},'
            f"{log.page_frags[page]},{who.registration_json},"
            f'"sessionId":{self.sid},"song":{title},"status":{status},'
            f'"ts":{self.t}{self.ms},{who.tail_json}}}',
        )
        self.item += 1
        if song is None:
            low, high = (1, 1) if page in QUICK_PAGES else (0, PAGE_GAP_MAX_S)
            self.t += log.rng.randint(low, high)
        return True

    def play(self) -> None:
        """A NextSong event; the next event comes when the song ends or is skipped."""
        log, rng = self.log, self.log.rng
        if self.done():
            return
        from_catalogue = rng.random() < CATALOGUE_PLAY_P
        songs, cum = (log.catalogue, log.catalogue_cum) if from_catalogue else (log.invented, log.invented_cum)
        song = songs[bisect.bisect(cum, rng.random() * cum[-1])]
        self.emit("NextSong", song=song)
        log.next_song += 1
        log.catalogue_plays += from_catalogue
        seconds = song[3]
        if rng.random() < SKIP_P:
            self.t += rng.randint(1, max(1, seconds))
        else:
            self.t += seconds + rng.randint(-1, 1)


def _zipf_cum(n: int, exponent: float) -> list[float]:
    """Cumulative Zipf weights for picking item i with probability ~ 1/(i+1)^s."""
    return list(accumulate((rank + 1) ** -exponent for rank in range(n)))


def generate(
    out,
    *,
    songs: int,
    events: int,
    seed: int,
    layout: str = "flat",
    start="2018-11-01",
    days: int = 30,
    songs_per_file: int = 1,
    songs_per_artist: float | None = None,
    duplicate_rate: float = 0.002,
    force: bool = False,
) -> Summary:
    """Write ``song_data/`` and ``log_data/`` under ``out`` and return what was written.

    ``events`` counts distinct events; duplicates (the same line again) come on top.
    """
    began = time.perf_counter()
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if songs < 1 or events < 0 or days < 1 or songs_per_file < 1:
        raise ValueError("songs, days and songs_per_file must be >= 1, events >= 0")
    if songs_per_artist is not None and songs_per_artist < 1:
        raise ValueError("songs_per_artist must be >= 1")
    if not 0 <= duplicate_rate < 1:
        raise ValueError("duplicate_rate must be in [0, 1)")
    start_date = start if isinstance(start, dt.date) else dt.date.fromisoformat(start)
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        if not force:
            raise FileExistsError(f"{root} is not empty; --force replaces its {SONG_DIR}/ and {LOG_DIR}/")
        for sub in (SONG_DIR, LOG_DIR):
            shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)

    catalogue = build_catalogue(songs, seed, songs_per_artist)
    song_files = write_songs(root, catalogue, songs_per_file)
    log = _EventLog(root, catalogue, events, seed, layout, start_date, days, duplicate_rate)
    log.run()
    return Summary(
        songs=len(catalogue),
        song_files=song_files,
        artists=len({record["artist_id"] for _, record in catalogue}),
        events=log.seq,
        duplicates=log.duplicates,
        next_song=log.next_song,
        catalogue_plays=log.catalogue_plays,
        seconds=time.perf_counter() - began,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, required=True, help="catalogue size")
    parser.add_argument("--events", type=int, required=True, help="distinct log events")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", required=True, help="input root to create")
    parser.add_argument("--layout", choices=LAYOUTS, default="flat")
    parser.add_argument("--start", default="2018-11-01", help="first UTC day")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--songs-per-file", type=int, default=1, help="records per song file (MSD: 1)")
    parser.add_argument(
        "--songs-per-artist",
        type=float,
        default=None,
        help="mean songs per artist (the full MSD: 22); default: the course bucket's (about 1.8)",
    )
    parser.add_argument("--duplicate-rate", type=float, default=0.002)
    parser.add_argument("--force", action="store_true", help="replace song_data/ and log_data/ in --out")
    args = parser.parse_args(argv)
    try:
        summary = generate(
            args.out,
            songs=args.songs,
            events=args.events,
            seed=args.seed,
            layout=args.layout,
            start=args.start,
            days=args.days,
            songs_per_file=args.songs_per_file,
            songs_per_artist=args.songs_per_artist,
            duplicate_rate=args.duplicate_rate,
            force=args.force,
        )
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
