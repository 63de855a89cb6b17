{{/* Names and labels. */}}
{{- define "saga.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "saga.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "saga.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "saga.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The labels that select one component's pods: call with (dict "root" $ "component" "x"). */}}
{{- define "saga.selector" -}}
app.kubernetes.io/name: {{ include "saga.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "saga.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "saga.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "saga.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "saga.tokensSecret" -}}
{{- default (printf "%s-http-tokens" (include "saga.fullname" .)) .Values.orchestrator.http.tokensSecret -}}
{{- end -}}

{{- define "saga.sasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol -}}true{{- end -}}
{{- end -}}

{{/*
Checks on values that would otherwise deploy something broken; each says what to change.
*/}}
{{- define "saga.checks" -}}
{{- $p := int .Values.topics.partitions -}}
{{- $r := int .Values.orchestrator.replicas -}}
{{- if lt $p 1 -}}
{{- fail "topics.partitions must be at least 1 (the partitions of saga-commands and saga-events)" -}}
{{- end -}}
{{- if gt $r $p -}}
{{- fail (printf "orchestrator.replicas (%d) must not exceed topics.partitions (%d): Kafka gives each partition to one copy, and a copy without one never turns ready" $r $p) -}}
{{- end -}}
{{- if not (has .Values.kafka.securityProtocol (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) -}}
{{- fail (printf "kafka.securityProtocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, not %q" .Values.kafka.securityProtocol) -}}
{{- end -}}
{{- if regexMatch "^rediss?://[^/@]*:[^/@]*@" .Values.redis.url -}}
{{- fail "redis.url must not carry a password (it would sit in the pod spec): set redis.auth: true and put it in the credentials Secret" -}}
{{- end -}}
{{- if not (regexMatch "^rediss?://" .Values.redis.url) -}}
{{- fail "redis.url must start with redis:// or rediss://" -}}
{{- end -}}
{{- end -}}

{{/*
The container's environment and the secret files it reads. Call with
(dict "root" $ "secret" <credentials Secret name> "kafkaUser" <name> "redisUser" <name>).
Secrets arrive as files under /etc/saga/secrets (the *_FILE settings); no env var holds one.
*/}}
{{- define "saga.env" -}}
{{- $v := .root.Values -}}
# Kafka static membership: a container restarted in the same pod keeps its name and gets its
# partitions back at once, without waiting out the session timeout of its dead self
- name: SAGA_GROUP_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: SAGA_KAFKA_BOOTSTRAP_SERVERS
  value: {{ $v.kafka.bootstrapServers | quote }}
- name: SAGA_KAFKA_SECURITY_PROTOCOL
  value: {{ $v.kafka.securityProtocol | quote }}
{{- if include "saga.sasl" .root }}
- name: SAGA_KAFKA_SASL_MECHANISM
  value: {{ $v.kafka.saslMechanism | quote }}
- name: SAGA_KAFKA_SASL_USERNAME
  value: {{ .kafkaUser | quote }}
- name: SAGA_KAFKA_SASL_PASSWORD_FILE
  value: /etc/saga/secrets/kafka-sasl-password
{{- end }}
{{- if $v.kafka.tls.secretName }}
- name: SAGA_KAFKA_SSL_CAFILE
  value: /etc/saga/kafka-tls/ca.crt
{{- if $v.kafka.tls.clientCert }}
- name: SAGA_KAFKA_SSL_CERTFILE
  value: /etc/saga/kafka-tls/tls.crt
- name: SAGA_KAFKA_SSL_KEYFILE
  value: /etc/saga/kafka-tls/tls.key
{{- end }}
{{- end }}
- name: SAGA_KAFKA_SSL_CHECK_HOSTNAME
  value: {{ $v.kafka.sslCheckHostname | quote }}
- name: SAGA_REDIS_URL
  value: {{ $v.redis.url | quote }}
{{- if $v.redis.auth }}
- name: SAGA_REDIS_USERNAME
  value: {{ .redisUser | quote }}
- name: SAGA_REDIS_PASSWORD_FILE
  value: /etc/saga/secrets/redis-password
{{- end }}
{{- if $v.redis.tls.secretName }}
- name: SAGA_REDIS_SSL_CAFILE
  value: /etc/saga/redis-tls/ca.crt
{{- if $v.redis.tls.clientCert }}
- name: SAGA_REDIS_SSL_CERTFILE
  value: /etc/saga/redis-tls/tls.crt
- name: SAGA_REDIS_SSL_KEYFILE
  value: /etc/saga/redis-tls/tls.key
{{- end }}
{{- end }}
- name: SAGA_REDIS_SSL_CHECK_HOSTNAME
  value: {{ $v.redis.sslCheckHostname | quote }}
- name: SAGA_COMMANDS_TOPIC
  value: {{ $v.topics.commands | quote }}
- name: SAGA_EVENTS_TOPIC
  value: {{ $v.topics.events | quote }}
- name: SAGA_DLQ_TOPIC
  value: {{ $v.topics.dlq | quote }}
- name: SAGA_TOPIC_PARTITIONS
  value: {{ $v.topics.partitions | quote }}
- name: SAGA_KEY_PREFIX
  value: {{ $v.keyPrefix | quote }}
- name: SAGA_OUTPUT_FORMAT
  value: {{ $v.outputFormat | quote }}
{{- if $v.schemaRegistryUrl }}
- name: SAGA_SCHEMA_REGISTRY_URL
  value: {{ $v.schemaRegistryUrl | quote }}
{{- end }}
{{- if $v.sagaModules }}
- name: SAGA_SAGA_MODULES
  value: {{ toJson $v.sagaModules | quote }}
{{- end }}
- name: SAGA_LOG_FORMAT
  value: {{ $v.logFormat | quote }}
- name: SAGA_LOG_LEVEL
  value: {{ $v.logLevel | quote }}
{{- end -}}

{{/* Whether a component needs its credentials Secret at all. */}}
{{- define "saga.needsCredentials" -}}
{{- if or (include "saga.sasl" .) .Values.redis.auth -}}true{{- end -}}
{{- end -}}

{{/*
The volumes of a pod: its secret files and a writable /tmp. Call with
(dict "root" $ "secret" <credentials Secret name> "tokens" <bool>).
*/}}
{{- define "saga.volumes" -}}
{{- $v := .root.Values -}}
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
{{- if or (include "saga.needsCredentials" .root) .tokens }}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
{{- if include "saga.needsCredentials" .root }}
      - secret:
          name: {{ .secret }}
          items:
{{- if include "saga.sasl" .root }}
            - {key: kafka-sasl-password, path: kafka-sasl-password}
{{- end }}
{{- if $v.redis.auth }}
            - {key: redis-password, path: redis-password}
{{- end }}
{{- end }}
{{- if .tokens }}
      - secret:
          name: {{ include "saga.tokensSecret" .root }}
          items:
            - {key: tokens, path: http-tokens}
{{- end }}
{{- end }}
{{- if $v.kafka.tls.secretName }}
- name: kafka-tls
  secret:
    secretName: {{ $v.kafka.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- if $v.redis.tls.secretName }}
- name: redis-tls
  secret:
    secretName: {{ $v.redis.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "saga.volumeMounts" -}}
{{- $v := .root.Values -}}
- {name: tmp, mountPath: /tmp}
{{- if or (include "saga.needsCredentials" .root) .tokens }}
- {name: secrets, mountPath: /etc/saga/secrets, readOnly: true}
{{- end }}
{{- if $v.kafka.tls.secretName }}
- {name: kafka-tls, mountPath: /etc/saga/kafka-tls, readOnly: true}
{{- end }}
{{- if $v.redis.tls.secretName }}
- {name: redis-tls, mountPath: /etc/saga/redis-tls, readOnly: true}
{{- end }}
{{- end -}}
