# Class data sharing (AppCDS) for the Spring Boot test fixtures, sourced by
# scripts/eureka-server, eureka-cluster, gateway, user-api and auth-service.
#
# The jar is extracted (Spring Boot's `-Djarmode=tools extract`) and one start
# that exits once its context is refreshed records a dynamic archive of the
# classes it loaded (`-XX:ArchiveClassesAtExit`); later starts map it
# (`-XX:SharedArchiveFile`). Measured for the Eureka server on the 2-core
# test host: 7.2 to 7.4 s of CPU and 7.4 to 9.3 s until it answers → 3.3 to
# 3.7 s and 3.0 to 4.3 s. A recording that fails leaves the plain jar in use.
#
# The caller sets: NAME (for messages), JAR, CDS_DIR, CDS_JAR (the extracted
# jar), CDS_ARCHIVE, JAVA, JAVA_OPTS, RUN_DIR (logs) and USE_CDS (0: plain
# jar). java_args sets JAVA_ARGS.

# True when the archive is missing or older than the jar.
needs_cds() {
  # a recording that failed for this jar is not retried at every start
  [[ -f "$CDS_DIR/failed" && ! "$JAR" -nt "$CDS_DIR/failed" ]] && return 1
  [[ ! -f "$CDS_ARCHIVE" || "$JAR" -nt "$CDS_ARCHIVE" ]]
}

# Extracts the jar and records a dynamic CDS archive from one start that exits
# once the context is refreshed (Eureka pointed at a closed port). On failure
# the plain jar is used.
make_cds() {
  echo "$NAME: making the class data sharing archive $CDS_ARCHIVE" >&2
  rm -rf "$CDS_DIR"
  local log="$RUN_DIR/$NAME-cds.log"
  # shellcheck disable=SC2086
  if "$JAVA" -Djarmode=tools -jar "$JAR" extract --destination "$CDS_DIR" >"$log" 2>&1 \
    && timeout 300 "$JAVA" $JAVA_OPTS -XX:ArchiveClassesAtExit="$CDS_ARCHIVE" \
      -Dspring.context.exit=onRefresh -jar "$CDS_JAR" --server.port=0 \
      --eureka.client.service-url.defaultZone=http://127.0.0.1:9/eureka/ >>"$log" 2>&1 \
    && [[ -f "$CDS_ARCHIVE" ]]; then
    touch "$CDS_ARCHIVE"
  else
    echo "$NAME: no CDS archive (see $log); starting the plain jar" >&2
    rm -rf "$CDS_DIR"
    mkdir -p "$CDS_DIR"
    touch "$CDS_DIR/failed"
  fi
}

# The java arguments that run the application: from the CDS archive when it
# is there and fresh, else the plain jar.
java_args() {
  # shellcheck disable=SC2206
  local opts=($JAVA_OPTS)
  if [[ "$USE_CDS" != 0 && -f "$CDS_ARCHIVE" && -f "$CDS_JAR" ]] && ! needs_cds; then
    JAVA_ARGS=("${opts[@]}" -XX:SharedArchiveFile="$CDS_ARCHIVE" -jar "$CDS_JAR")
  else
    JAVA_ARGS=("${opts[@]}" -jar "$JAR")
  fi
}
