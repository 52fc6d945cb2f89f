"""The development broker: Kafka jars from Maven Central, a local KRaft broker, its TLS/SCRAM files.

Kept apart from the production plumbing in ``streams``: nothing here runs in a deployment that sets
``KAFKA_BOOTSTRAP_SERVERS``. ``ratewarden kafka start``, ``make demo``, the tests and the benchmarks use it.
"""

from streams.devkafka.broker import KAFKA_VERSION, LocalKafka, local_home
from streams.devkafka.tls import SaslSsl

__all__ = ["KAFKA_VERSION", "LocalKafka", "SaslSsl", "local_home"]
