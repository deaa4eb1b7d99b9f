{{/*
The components, in the order they are rendered. Each is a subcommand of the
image (`sendstack-bridge <component>`) and a key of the values.
*/}}
{{- define "sendstack-bridge.components" -}}
stream webhooks commands
{{- end -}}

{{- define "sendstack-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's full name; component objects append "-<component>", so it is
kept short enough for that (and for "-metrics") to fit in 63 characters.
*/}}
{{- define "sendstack-bridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 44 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 44 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 44 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sendstack-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sendstack-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sendstack-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sendstack-bridge.labels" -}}
helm.sh/chart: {{ include "sendstack-bridge.chart" . }}
{{ include "sendstack-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sendstack-bridge
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "stream"). */}}
{{- define "sendstack-bridge.componentSelectorLabels" -}}
{{ include "sendstack-bridge.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sendstack-bridge.componentLabels" -}}
{{ include "sendstack-bridge.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sendstack-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sendstack-bridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sendstack-bridge.secretName" -}}
{{- default (include "sendstack-bridge.fullname" .) .Values.credentials.existingSecret -}}
{{- end -}}

{{- define "sendstack-bridge.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The BRIDGE_* variables of one component's ConfigMap, as YAML:
`config`, then `<component>.config` over it, then what the chart owns (the
ops and webhook listeners). Empty values are left out. Called with
(dict "root" $ "component" "stream").
*/}}
{{- define "sendstack-bridge.componentConfig" -}}
{{- $root := .root -}}
{{- $env := dict -}}
{{- range $name, $value := $root.Values.config -}}
{{- $_ := set $env $name $value -}}
{{- end -}}
{{- range $name, $value := (index $root.Values .component).config -}}
{{- $_ := set $env $name $value -}}
{{- end -}}
{{- range $name, $value := $env -}}
{{- if eq (toString $value) "" -}}
{{- $_ := unset $env $name -}}
{{- end -}}
{{- end -}}
{{- $_ := set $env "BRIDGE_OPS_HOST" "0.0.0.0" -}}
{{- $_ := set $env "BRIDGE_OPS_PORT" ($root.Values.ops.port | int | toString) -}}
{{- if eq .component "webhooks" -}}
{{- $_ := set $env "BRIDGE_WEBHOOK_HOST" "0.0.0.0" -}}
{{- $_ := set $env "BRIDGE_WEBHOOK_PORT" ($root.Values.webhooks.port | int | toString) -}}
{{- end -}}
{{- if eq .component "stream" -}}
{{- $journal := $root.Values.stream.journal -}}
{{- if $journal.enabled -}}
{{- $_ := set $env "BRIDGE_JOURNAL_ENABLED" "true" -}}
{{- $_ := set $env "BRIDGE_JOURNAL_DIR" (include "sendstack-bridge.journalDir" $root) -}}
{{- $_ := set $env "BRIDGE_JOURNAL_MAX_BYTES" ($journal.maxBytes | int64 | toString) -}}
{{- $_ := set $env "BRIDGE_JOURNAL_DURABILITY" $journal.durability -}}
{{- $_ := set $env "BRIDGE_JOURNAL_FLUSH_INTERVAL_MS" ($journal.flushIntervalMs | int64 | toString) -}}
{{- $_ := set $env "BRIDGE_JOURNAL_WHEN_FULL" $journal.whenFull -}}
{{- else -}}
{{- $_ := set $env "BRIDGE_JOURNAL_ENABLED" "false" -}}
{{- end -}}
{{- $_ := set $env "BRIDGE_STREAM_SINGLE_SESSION" (ternary "true" "false" (eq (toString $root.Values.stream.singleSession) "true")) -}}
{{- $ha := $root.Values.stream.ha -}}
{{- if $ha.enabled -}}
{{- $_ := set $env "BRIDGE_HA_ENABLED" "true" -}}
{{- $_ := set $env "BRIDGE_HA_ACCOUNT" $ha.account -}}
{{- $_ := set $env "BRIDGE_HA_COORDINATION_TOPIC" (include "sendstack-bridge.coordinationTopic" $root) -}}
{{- $_ := set $env "BRIDGE_HA_GROUP_ID" (include "sendstack-bridge.haGroupId" $root) -}}
{{- $_ := set $env "BRIDGE_HA_SESSION_TIMEOUT_MS" ($ha.sessionTimeoutMs | int64 | toString) -}}
{{- $_ := set $env "BRIDGE_HA_HEARTBEAT_INTERVAL_MS" ($ha.heartbeatIntervalMs | int64 | toString) -}}
{{- $_ := set $env "BRIDGE_HA_BUFFER_SECONDS" ($ha.bufferSeconds | float64 | toString) -}}
{{- $_ := set $env "BRIDGE_HA_BUFFER_BYTES" ($ha.bufferBytes | int64 | toString) -}}
{{- $_ := set $env "BRIDGE_HA_PROGRESS_INTERVAL_MS" ($ha.progressIntervalMs | int64 | toString) -}}
{{- $_ := set $env "BRIDGE_HA_CATCH_UP_SECONDS" ($ha.catchUpSeconds | float64 | toString) -}}
{{- if $ha.transactionalId -}}
{{- $_ := set $env "BRIDGE_HA_TRANSACTIONAL_ID" $ha.transactionalId -}}
{{- $_ := set $env "BRIDGE_HA_TRANSACTION_MS" ($ha.transactionMs | int64 | toString) -}}
{{- end -}}
{{- else -}}
{{- $_ := set $env "BRIDGE_HA_ENABLED" "false" -}}
{{- if $root.Values.stream.accounts -}}
{{- /* The primary's name is in its records, with or without HA. */ -}}
{{- $_ := set $env "BRIDGE_HA_ACCOUNT" $ha.account -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $env -}}
{{- end -}}

{{/*
The hot standby's coordination topic (BRIDGE_HA_COORDINATION_TOPIC):
stream.ha.coordinationTopic, else one per release and namespace. Leaders
report there what Kafka acknowledged and a standby skips, on takeover, what
was reported: two releases sharing a topic would skip each other's records.
*/}}
{{- define "sendstack-bridge.coordinationTopic" -}}
{{- .Values.stream.ha.coordinationTopic | default (printf "%s.%s-coordination%s" .Release.Namespace (include "sendstack-bridge.fullname" .) (include "sendstack-bridge.accountsSuffix" .)) -}}
{{- end -}}

{{/*
The hot standby's consumer group (BRIDGE_HA_GROUP_ID): stream.ha.groupId,
else one per release and namespace, so that two releases never elect a single
leader between them.
*/}}
{{- define "sendstack-bridge.haGroupId" -}}
{{- .Values.stream.ha.groupId | default (printf "%s.%s-stream%s" .Release.Namespace (include "sendstack-bridge.fullname" .) (include "sendstack-bridge.accountsSuffix" .)) -}}
{{- end -}}

{{/*
The stream's accounts in the order every replica numbers them (partition i of
the coordination topic is account i): stream.ha.account (the credentials'
app), then the names of stream.accounts sorted, comma-joined.
*/}}
{{- define "sendstack-bridge.accountNames" -}}
{{- $names := list -}}
{{- range .Values.stream.accounts -}}
{{- $names = append $names (toString .name) -}}
{{- end -}}
{{- prepend (sortAlpha $names) .Values.stream.ha.account | join "," -}}
{{- end -}}

{{/*
With stream.accounts: "-" and the first 8 hex digits of the sha256 of
accountNames, appended to the default coordination topic and group. Another
list of accounts numbers the partitions differently (and needs another
partition count), so its replicas must not share the old ones' topic or
group: a rollout that changes the list runs the old and the new pods in two
groups, both leading, until it ends (duplicates with the same ce_id, no gap).
Empty without stream.accounts: the names stay as they were.
*/}}
{{- define "sendstack-bridge.accountsSuffix" -}}
{{- if .Values.stream.accounts -}}
{{- printf "-%s" (include "sendstack-bridge.accountNames" . | sha256sum | trunc 8) -}}
{{- end -}}
{{- end -}}

{{/*
Where the stream's accounts are mounted (BRIDGE_STREAM_ACCOUNTS_DIR): one
directory per entry of stream.accounts.
*/}}
{{- define "sendstack-bridge.accountsDir" -}}
/etc/sendstack-bridge/accounts
{{- end -}}

{{/*
The per-account topic overrides of stream.accounts, as a YAML list of
(key in the -stream-accounts ConfigMap, path in the accounts volume, topic);
empty topics are left out (the account uses the shared one).
*/}}
{{- define "sendstack-bridge.accountTopicFiles" -}}
{{- $files := dict "positions" "topic_positions" "deviceStatus" "topic_device_status" "events" "topic_events" "deadLetter" "topic_dead_letter" -}}
{{- range $account := .Values.stream.accounts -}}
{{- range $value, $file := $files -}}
{{- $topic := index ($account.topics | default dict) $value | default "" | toString -}}
{{- if $topic }}
- key: {{ printf "%s.%s" $account.name $file | quote }}
  path: {{ printf "%s/%s" $account.name $file | quote }}
  topic: {{ $topic | quote }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Where the stream's journal volume is mounted: the directory the image's
BRIDGE_JOURNAL_DIR names (the chart sets the variable to it as well).
*/}}
{{- define "sendstack-bridge.journalDir" -}}
/var/lib/sendstack-bridge/journal
{{- end -}}

{{/*
A Kubernetes quantity ("2Gi", "500M", "1073741824") in bytes, as a float.
Plain decimal and binary suffixes only; the schema refuses anything else.
*/}}
{{- define "sendstack-bridge.quantityBytes" -}}
{{- $quantity := toString . -}}
{{- $number := regexFind "^[0-9]+([.][0-9]+)?" $quantity -}}
{{- $suffix := trimPrefix $number $quantity -}}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- if or (not $number) (not (hasKey $units $suffix)) -}}
{{- fail (printf "%q is not a size this chart understands (e.g. 2Gi, 500Mi, 3G)" $quantity) -}}
{{- end -}}
{{- mulf (float64 $number) (index $units $suffix) -}}
{{- end -}}

{{/*
Credentials as (file name in the mount, Secret key, BRIDGE_*_FILE variable)
triples, as YAML; the SASL pair only with credentials.kafkaSasl.
*/}}
{{- define "sendstack-bridge.credentialFiles" -}}
{{- $keys := .Values.credentials.keys -}}
- file: sendstack-app-id
  key: {{ $keys.sendstackAppId | quote }}
  variable: BRIDGE_SENDSTACK_APP_ID_FILE
- file: sendstack-app-secret
  key: {{ $keys.sendstackAppSecret | quote }}
  variable: BRIDGE_SENDSTACK_APP_SECRET_FILE
{{- if .Values.credentials.kafkaSasl }}
- file: kafka-sasl-username
  key: {{ $keys.kafkaSaslUsername | quote }}
  variable: BRIDGE_KAFKA_SASL_USERNAME_FILE
- file: kafka-sasl-password
  key: {{ $keys.kafkaSaslPassword | quote }}
  variable: BRIDGE_KAFKA_SASL_PASSWORD_FILE
{{- end }}
{{- end -}}

{{/* Chart-level checks that the schema cannot express. */}}
{{- define "sendstack-bridge.validate" -}}
{{- range $component := splitList " " (include "sendstack-bridge.components" .) -}}
{{- $values := index $.Values $component -}}
{{- if $values.enabled -}}
{{- $env := include "sendstack-bridge.componentConfig" (dict "root" $ "component" $component) | fromYaml -}}
{{- $grace := index $env "BRIDGE_SHUTDOWN_GRACE_SECONDS" | default "20" -}}
{{- if ge (float64 $grace) (float64 $.Values.terminationGracePeriodSeconds) -}}
{{- fail (printf "%s: BRIDGE_SHUTDOWN_GRACE_SECONDS (%s) must be below terminationGracePeriodSeconds (%v), or the kubelet kills the bridge before it has flushed to Kafka" $component $grace $.Values.terminationGracePeriodSeconds) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $journal := .Values.stream.journal -}}
{{- if and .Values.stream.enabled $journal.enabled -}}
{{- $size := include "sendstack-bridge.quantityBytes" $journal.size | float64 -}}
{{- if gt (mulf $journal.maxBytes 5) (mulf $size 4) -}}
{{- fail (printf "stream.journal.maxBytes (%d) must be at most 80%% of stream.journal.size (%s = %.0f bytes): the volume also holds SQLite's page overhead, its write-ahead log and any quarantined file, and a full volume stops the stream (persistentVolumeClaim) or gets the pod evicted with its journal (emptyDir)" (int64 $journal.maxBytes) (toString $journal.size) $size) -}}
{{- end -}}
{{- if and (eq $journal.volume "persistentVolumeClaim") (not .Values.podSecurityContext.fsGroup) -}}
{{- fail "stream.journal: a persistentVolumeClaim is owned by root; set podSecurityContext.fsGroup (10001 by default) so that the bridge (UID 10001) can write its journal" -}}
{{- end -}}
{{- end -}}
{{- $stream := .Values.stream -}}
{{- if $stream.enabled -}}
{{- /* The schema checks names too; again here for --skip-schema-validation. */ -}}
{{- $seen := dict -}}
{{- range $i, $account := $stream.accounts -}}
{{- $name := toString (default "" $account.name) -}}
{{- if not (regexMatch "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$" $name) -}}
{{- fail (printf "stream.accounts[%d].name %q: an account's name is 1-64 of A-Z a-z 0-9 . _ - and does not start with a dot (it names a directory, a label and the records' ce_source)" $i $name) -}}
{{- end -}}
{{- if eq $name (toString $stream.ha.account) -}}
{{- fail (printf "stream.accounts[%d].name %q is stream.ha.account, the name of the primary account (credentials.*): give this account another name, or change stream.ha.account" $i $name) -}}
{{- end -}}
{{- if hasKey $seen $name -}}
{{- fail (printf "stream.accounts: %q is listed twice (entries %d and %d): each account needs a name of its own" $name (index $seen $name) $i) -}}
{{- end -}}
{{- $_ := set $seen $name $i -}}
{{- if not $account.existingSecret -}}
{{- fail (printf "stream.accounts[%d] (%q): existingSecret is required, the name of a Secret holding the account's app id and secret (keys appIdKey and appSecretKey, app_id and app_secret by default)" $i $name) -}}
{{- end -}}
{{- end -}}
{{- $replicas := int $stream.replicas -}}
{{- /* The schema refuses this too; checked again for --skip-schema-validation. */ -}}
{{- if and (gt $replicas 1) (not $stream.ha.enabled) -}}
{{- fail (printf "stream.replicas is %d but stream.ha.enabled is false: every replica would publish every item (set stream.ha.enabled: true, or stream.replicas: 1)" $replicas) -}}
{{- end -}}
{{- if $stream.ha.enabled -}}
{{- $ha := $stream.ha -}}
{{- if lt (int64 $ha.sessionTimeoutMs) (mul 3 (int64 $ha.heartbeatIntervalMs)) -}}
{{- fail (printf "stream.ha.sessionTimeoutMs (%d) must be at least 3 times stream.ha.heartbeatIntervalMs (%d), or a member is expelled between two heartbeats" (int64 $ha.sessionTimeoutMs) (int64 $ha.heartbeatIntervalMs)) -}}
{{- end -}}
{{- /* The election's consumer uses the Kafka request timeout for its JoinGroup
requests, which the broker holds for up to the session timeout (the rebalance
timeout) plus group.initial.rebalance.delay.ms (3000 by default). */ -}}
{{- $env := include "sendstack-bridge.componentConfig" (dict "root" $ "component" "stream") | fromYaml -}}
{{- $requestTimeout := index $env "BRIDGE_KAFKA_REQUEST_TIMEOUT_MS" | default "30000" -}}
{{- $joinMs := add (int64 $ha.sessionTimeoutMs) 3000 -}}
{{- if lt (float64 $requestTimeout) (float64 $joinMs) -}}
{{- fail (printf "stream: BRIDGE_KAFKA_REQUEST_TIMEOUT_MS (%s) must be at least stream.ha.sessionTimeoutMs + 3000 (%d): the hot standby's election sends its group joins with that timeout, and the broker may hold a join for the session timeout plus group.initial.rebalance.delay.ms (3000 by default); shorter, no replica is ever elected and nothing is published" $requestTimeout $joinMs) -}}
{{- end -}}
{{- if lt (mulf $ha.bufferSeconds 1000) (mulf $ha.sessionTimeoutMs 2) -}}
{{- fail (printf "stream.ha.bufferSeconds (%v) must be at least twice stream.ha.sessionTimeoutMs (%d ms): what a dead leader did not report must still be in the standby's buffer when it takes over" $ha.bufferSeconds (int64 $ha.sessionTimeoutMs)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
