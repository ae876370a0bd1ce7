"""One well-formed input record of each kind, with every field; tests derive variants from them."""

from __future__ import annotations

NOV_15 = 1542240000000  # 2018-11-15T00:00:00Z in epoch milliseconds

EVENT = {
    "artist": "Elena",
    "auth": "Logged In",
    "firstName": "Lily",
    "gender": "F",
    "itemInSession": 0,
    "lastName": "Koch",
    "length": 200.0,
    "level": "paid",
    "location": "Chicago, IL",
    "method": "PUT",
    "page": "NextSong",
    "registration": 1540000000000.0,
    "sessionId": 818,
    "song": "Setanta matins",
    "status": 200,
    "ts": NOV_15,
    "userAgent": '"Mozilla/5.0"',
    "userId": "7",
}

SONG = {
    "num_songs": 1,
    "artist_id": "AR1",
    "artist_latitude": None,
    "artist_longitude": None,
    "artist_location": "",
    "artist_name": "Elena",
    "song_id": "SO1",
    "title": "Setanta matins",
    "duration": 200.0,
    "year": 0,
}
