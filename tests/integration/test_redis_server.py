"""The private redis-server leaves no temporary directory behind, and keeps what it was given."""

import redis

from online.redis_server import RedisServer


def test_a_directory_it_made_is_removed_when_it_stops():
    server = RedisServer().start()
    made = server.dir
    assert made.is_dir()
    server.stop()
    assert not made.exists()

    with RedisServer() as server:
        made = server.dir
        assert (made / "redis-server.log").exists()
    assert not made.exists()


def test_a_directory_it_was_given_is_kept(tmp_path):
    with RedisServer(directory=tmp_path / "redis") as server:
        pass
    assert (server.dir / "redis-server.log").exists()


def test_with_persist_its_own_directory_lasts_across_a_restart_until_the_block_ends():
    with RedisServer(persist=True) as server:
        made = server.dir
        redis.Redis.from_url(server.url).set("k", "v")
        server.stop()
        assert made.is_dir()  # the append-only file is still there
        server.start()
        assert redis.Redis.from_url(server.url).get("k") == b"v"
    assert not made.exists()
