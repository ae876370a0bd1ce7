-- Athena / AWS Glue Data Catalog tables over the parquet that etl.py writes.
-- Generated from etl.py's TABLE_SCHEMAS and PARTITION_COLUMNS; do not edit, regenerate:
--   python tools/analyze.py --ddl --location s3://BUCKET/PREFIX --years 2018,2030
-- Athena runs one statement per query: run them one by one, in a database of your choice.

CREATE EXTERNAL TABLE IF NOT EXISTS `songplays` (
  `songplay_id` string,
  `start_time` timestamp,
  `user_id` int,
  `level` string,
  `song_id` string,
  `artist_id` string,
  `session_id` int,
  `location` string,
  `user_agent` string
)
PARTITIONED BY (
  `year` int,
  `month` int
)
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/songplays/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.year.type' = 'integer',
  'projection.year.range' = '2018,2030',
  'projection.month.type' = 'integer',
  'projection.month.range' = '1,12',
  'storage.location.template' = 's3://BUCKET/PREFIX/songplays/year=${year}/month=${month}/'
);

CREATE EXTERNAL TABLE IF NOT EXISTS `users` (
  `user_id` int,
  `first_name` string,
  `last_name` string,
  `gender` string,
  `level` string
)
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/users/';

CREATE EXTERNAL TABLE IF NOT EXISTS `songs` (
  `song_id` string,
  `title` string,
  `duration` double
)
PARTITIONED BY (
  `year` int,
  `artist_id` string
)
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/songs/';

-- songs: partitioned by year, artist_id. artist_id is an unbounded string, and Athena's only
-- projection for such values ('injected') rejects every query that does not pin
-- artist_id = '...' in its WHERE clause, joins included (top_songs.sql would fail).
-- So its partitions are registered instead: run this after each job run.
MSCK REPAIR TABLE `songs`;

CREATE EXTERNAL TABLE IF NOT EXISTS `artists` (
  `artist_id` string,
  `name` string,
  `location` string,
  `latitude` double,
  `longitude` double
)
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/artists/';

CREATE EXTERNAL TABLE IF NOT EXISTS `time` (
  `start_time` timestamp,
  `hour` int,
  `day` int,
  `week` int,
  `weekday` int
)
PARTITIONED BY (
  `year` int,
  `month` int
)
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/time/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.year.type' = 'integer',
  'projection.year.range' = '2018,2030',
  'projection.month.type' = 'integer',
  'projection.month.range' = '1,12',
  'storage.location.template' = 's3://BUCKET/PREFIX/time/year=${year}/month=${month}/'
);
