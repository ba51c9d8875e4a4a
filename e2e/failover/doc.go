// Package failover is chatd's end-to-end test of a multi-replica deployment:
// three chatd processes share one Redis behind nginx, built and configured as
// deploy/ and the Dockerfile describe, while 200 clients chat through the
// balancer and replicas are drained (SIGTERM) and killed (SIGKILL); and one
// user far over its socket cap must not make the balancer fail anyone else.
// The same three replicas also run on a six-node Redis Cluster, with and
// without -redis-wait, while a Redis master is killed under them
// (TestClusterFailoverWait, TestClusterFailoverNoWait).
//
// It needs redis-server and nginx on the machine and runs only when asked:
//
//	CHATD_E2E=1 go test -v -count=1 -timeout 20m ./e2e/failover/
//
// Every process it starts listens on a free loopback port and lives in a
// temporary folder; nothing else on the machine (such as a Redis on 6379) is
// touched, except that the cluster takes ports 7100-7105 and their cluster
// bus ports 17100-17105 (CHATD_E2E_CLUSTER_PORT moves them), made and
// stopped by .ci/redis-cluster.
package failover
