#!/usr/bin/env bash
# Entrypoint of the ffs image: `ffs ARGS...`.
#
# Spark on Kubernetes (the Spark Operator's SparkApplications, infra/k8s/stream.yaml and
# backfill.yaml) starts the driver pod with `driver ...` and executor pods with `executor ...`;
# those two are handled the way Apache Spark's own image entrypoint handles them
# (apache/spark-docker entrypoint.sh.template, Apache-2.0), without its root/gosu and
# random-uid branches: this image runs as the user ffs (uid 10001), which has a passwd entry.
set -euo pipefail

case "${1:-}" in
  driver)
    shift
    exec "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client "$@"
    ;;
  executor)
    shift
    # spark.executor.extraClassPath arrives as SPARK_CLASSPATH, Java options as SPARK_JAVA_OPT_<n>
    classpath="${SPARK_CLASSPATH:-}:${SPARK_HOME}/jars/*"
    if [ -n "${SPARK_EXTRA_CLASSPATH:-}" ]; then classpath="$classpath:$SPARK_EXTRA_CLASSPATH"; fi
    classpath="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$classpath:$PWD"
    java_opts=()
    for v in "${!SPARK_JAVA_OPT_@}"; do java_opts+=("${!v}"); done
    exec "${JAVA_HOME}/bin/java" "${java_opts[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
      -cp "$classpath" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
      --podName "$SPARK_EXECUTOR_POD_NAME"
    ;;
  *)
    exec ffs "$@"
    ;;
esac
