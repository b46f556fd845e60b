"""KB Portal on ten hosts (network namespaces, `bench/hosts.py`) while one of them fails.

Each scenario uploads documents through the proxy and searches through it while a fault is on,
then prints what was sent, acknowledged and found, and asserts that every acknowledged document
is indexed exactly once: its row says indexed and Elasticsearch holds exactly its `chunk_count`
chunks, no document is missing and none is doubled. Run them with `make cluster-test`.
"""

import time

import httpx
import pytest

from bench.processes import wait_until
from tests.cluster.conftest import SearchLoad, Uploader, check_counts, job_states, query, wait_jobs_finished

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420), pytest.mark.usefixtures("logs_on_failure")]


def jobs_held_by(cluster, worker: str) -> list[int]:
    """The running jobs whose lease the worker on host `worker` holds (lease owner `hostname:pid`)."""
    pid = cluster.host(worker).processes["worker"].pid
    rows = query(cluster, "SELECT id FROM ingestion_ingestionjob WHERE status = 'running' AND lease_owner LIKE %s",
                 f"%:{pid}")
    return [pk for (pk,) in rows]


def test_a_worker_host_cut_off_mid_job_hands_its_job_over_and_every_document_is_indexed_once(cluster, make_kb):
    kb = make_kb("handover")
    load = SearchLoad(kb).start()
    uploader = Uploader(kb, first=0, count=45)
    uploader.start()
    worker = cluster.host("worker1")
    try:
        held = wait_until(lambda: jobs_held_by(cluster, "worker1"), timeout=60, message="worker1 to hold a job",
                        interval=0.05)
        worker.cut()  # mid-job: it can no longer renew its lease, write its chunks or finish
        cut_at = time.monotonic()
        time.sleep(1)
        worker.kill()
        lease_left = query(cluster, "SELECT max(extract(epoch FROM lease_expires_at - now())) FROM "
                           "ingestion_ingestionjob WHERE id = ANY(%s)", held)[0][0]
        wait_until(lambda: all(attempts >= 2 for _, attempts in job_states(cluster, held).values()), timeout=120,
                 message="another worker to claim the jobs worker1 held", interval=0.2)
        claimed_again = time.monotonic() - cut_at
        uploads = uploader.finish()
        states = wait_jobs_finished(cluster, held)
    finally:
        load.stop()
        worker.reconnect()
        cluster.start_worker("worker1")
    found = check_counts(
        "a (worker host cut off mid-job)", cluster, kb, uploads,
        f"jobs it held {held}: {states}; their lease ran out {lease_left + 1:.1f}s after the cut, another worker "
        f"claimed them {claimed_again:.1f}s after it",
        load.summary(),
    )
    assert all(status == "succeeded" and attempts >= 2 for status, attempts in states.values()), states
    assert len(found.indexed) == len(uploads.acknowledged) == 45
    assert load.failed == 0


def test_b_one_web_host_stops_and_searches_go_on_through_the_proxy(cluster, make_kb):
    kb = make_kb("webfail")
    load = SearchLoad(kb).start()
    uploader = Uploader(kb, first=100, count=24, interval=0.25)
    uploader.start()
    web = cluster.host("web2")
    try:
        time.sleep(2)
        ok_before = load.ok
        web.kill()  # a crash: requests in flight on it are cut off
        time.sleep(6)
        ok_during = load.ok - ok_before
        uploads = uploader.finish()
    finally:
        load.stop()
        cluster.start_web("web2")
        cluster.wait_web("web2")
    found = check_counts("b (web host stopped)", cluster, kb, uploads,
                         f"{ok_during} searches answered in the 6 s after the stop", load.summary())
    assert ok_during > 0
    # At most the requests in flight on the stopped host fail (and idempotent GETs are retried on the other).
    assert load.failed <= load.concurrency
    assert len(uploads.refused) <= 1  # one upload at a time
    assert len(found.indexed) >= len(uploads.acknowledged) >= 23


def primary_node(cluster) -> str:
    shards = httpx.get(f"{cluster.es_url('es1')}/_cat/shards/kb_chunks", params={"format": "json"}, timeout=10).json()
    return next(shard["node"] for shard in shards if shard["prirep"] == "p")


def test_c_one_elasticsearch_node_stops_the_cluster_goes_yellow_and_nothing_acknowledged_is_lost(cluster, make_kb):
    kb = make_kb("esfail")
    load = SearchLoad(kb).start()
    node = primary_node(cluster)  # the node holding the chunk index's primary shard
    survivor = next(name for name in cluster.ES_NODES if name != node)
    uploader = Uploader(kb, first=200, count=24, interval=0.3)
    uploader.start()
    try:
        time.sleep(2)
        cluster.host(node).kill()
        yellow = wait_until(
            lambda: (h := cluster.es_health(survivor)) and (h["status"], h["number_of_nodes"]) == ("yellow", 2) and h,
            timeout=60, message="the cluster to go yellow with two nodes", interval=0.5)
        ok_before = load.ok
        time.sleep(5)
        ok_yellow = load.ok - ok_before
        uploads = uploader.finish()
        wait_jobs_finished(cluster, uploads.acknowledged.values())  # indexed with a node down
        acknowledged_while_down = len(uploads.acknowledged)
        cluster.start_elasticsearch(node)
        green = cluster.wait_green(via=survivor)
    finally:
        load.stop()
        if not cluster.host(node).running("elasticsearch"):
            cluster.start_elasticsearch(node)
    found = check_counts(
        f"c (Elasticsearch node {node} stopped, it held the primary)", cluster, kb, uploads,
        f"health {yellow['status']} with {yellow['number_of_nodes']} nodes, then {green['status']} with "
        f"{green['number_of_nodes']}", f"{ok_yellow} searches answered in 5 s while yellow", load.summary(),
    )
    assert ok_yellow > 0
    assert load.failed <= load.concurrency
    assert acknowledged_while_down == len(uploads.acknowledged) == 24
    assert len(found.indexed) == 24


def succeeded(cluster, job_ids) -> int:
    return query(cluster, "SELECT count(*) FROM ingestion_ingestionjob WHERE id = ANY(%s) AND status = 'succeeded'",
                 list(job_ids))[0][0]


def test_d_workers_partitioned_from_redis_for_30_s_resume_by_themselves(cluster, make_kb):
    kb = make_kb("partition", embedder="hashing")
    load = SearchLoad(kb).start()
    redis_address = cluster.data.address
    workers = [cluster.host(name) for name in cluster.WORKERS]
    uploader = Uploader(kb, first=300, count=24, interval=0.5)
    try:
        for worker in workers:
            worker.block(redis_address, 6379)
        uploader.start()
        time.sleep(30)
        uploads = uploader.finish()
        indexed_during = succeeded(cluster, uploads.acknowledged.values())
    finally:
        for worker in workers:
            worker.unblock(redis_address, 6379)
    healed_at = time.monotonic()
    try:
        wait_until(lambda: succeeded(cluster, uploads.acknowledged.values()) > indexed_during, timeout=120,
                 message="the workers to index again", interval=0.2)
        resumed = time.monotonic() - healed_at
        wait_jobs_finished(cluster, uploads.acknowledged.values(), seconds=120)
        caught_up = time.monotonic() - healed_at
    finally:
        load.stop()
    alive = [worker.name for worker in workers if worker.running("worker")]
    found = check_counts(
        "d (workers partitioned from Redis for 30 s)", cluster, kb, uploads,
        f"{indexed_during} indexed during the partition, the next {resumed:.1f}s after it ended, all {caught_up:.1f}s "
        "after it",
        f"workers still running: {', '.join(alive)}", load.summary(),
    )
    assert alive == list(cluster.WORKERS)
    assert len(found.indexed) == len(uploads.acknowledged) == 24
    assert load.failed == 0
