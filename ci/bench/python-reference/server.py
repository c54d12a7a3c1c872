# The Python grpclib reference service, the published Python example (python-async-grpclib-otel.md) ("Code Sample"), verbatim but for
# the lines marked "bench:" (README.md beside this file). ci/bench/bench.py --reference generates
# myservice_pb2.py and myservice_grpc.py from the render's proto and runs this with the reference service venv.
import asyncio
import logging
import os  # bench: the settings below come from the environment
import time

from grpclib.server import Server
from grpclib.const import Status  # bench: for StreamResults
from grpclib.exceptions import GRPCError  # bench: for StreamResults
from grpclib.client import Channel

from opentelemetry import trace, metrics
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource, SERVICE_NAME, SERVICE_VERSION
from opentelemetry.trace import get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from myservice_grpc import MyServiceBase, MyServiceStub
from myservice_pb2 import MyRequest, MyResponse

# bench: the reference service hard-codes the collector, the port and the 10 ms query; these read them from
# the environment, with the reference service's values as defaults.
OTLP_ENDPOINT = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "otel-collector:4317")
LISTEN_HOST, _, LISTEN_PORT = os.environ.get("LISTEN_ADDR", "0.0.0.0:50051").rpartition(":")
DB_LATENCY_MS = float(os.environ.get("DB_LATENCY_MS", "10"))

# ============================================================
# LOGGING SETUP
# ============================================================
class TraceContextFilter(logging.Filter):
    def filter(self, record):
        span = get_current_span()
        ctx = span.get_span_context()
        record.trace_id = format(ctx.trace_id, '032x') if ctx.is_valid else "0"
        record.span_id = format(ctx.span_id, '016x') if ctx.is_valid else "0"
        return True

logging.basicConfig(
    format='{"timestamp":"%(asctime)s","level":"%(levelname)s","message":"%(message)s","trace_id":"%(trace_id)s","span_id":"%(span_id)s"}',
    level=logging.INFO
)
logger = logging.getLogger(__name__)
logger.addFilter(TraceContextFilter())


def init_telemetry():
    resource = Resource.create({
        SERVICE_NAME: "my-python-async-service",
        SERVICE_VERSION: "1.0.0",
    })

    # ============================================================
    # TRACING SETUP
    # ============================================================
    trace_provider = TracerProvider(resource=resource)
    trace_processor = BatchSpanProcessor(
        OTLPSpanExporter(endpoint=OTLP_ENDPOINT, insecure=True)
    )
    trace_provider.add_span_processor(trace_processor)
    trace.set_tracer_provider(trace_provider)

    # ============================================================
    # METRICS SETUP
    # ============================================================
    metric_reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=OTLP_ENDPOINT, insecure=True),
        export_interval_millis=10000,
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader])
    metrics.set_meter_provider(meter_provider)

    # ============================================================
    # LOG EXPORT SETUP (OTLP)
    # ============================================================
    logger_provider = LoggerProvider(resource=resource)
    log_processor = BatchLogRecordProcessor(
        OTLPLogExporter(endpoint=OTLP_ENDPOINT, insecure=True)
    )
    logger_provider.add_log_record_processor(log_processor)
    handler = LoggingHandler(level=logging.INFO, logger_provider=logger_provider)
    logging.getLogger().addHandler(handler)

    return trace.get_tracer(__name__), metrics.get_meter(__name__)


tracer, meter = init_telemetry()
propagator = TraceContextTextMapPropagator()

# Custom metrics instruments
request_counter = meter.create_counter(
    name="myservice.requests.total",
    description="Total number of requests processed",
    unit="{requests}",
)
request_duration = meter.create_histogram(
    name="myservice.request.duration",
    description="Request processing duration",
    unit="s",
)
active_requests = meter.create_up_down_counter(
    name="myservice.requests.active",
    description="Number of requests currently being processed",
    unit="{requests}",
)


class MyServiceImpl(MyServiceBase):
    # bench: the render's proto has a server stream the reference service never had; grpclib's generated base
    # class requires every method, so the reference service answers it as a server without it would.
    async def StreamResults(self, stream) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "StreamResults is not part of the reference service")

    async def ProcessRequest(self, stream) -> None:
        start_time = time.time()
        request = await stream.recv_message()

        # Track active requests (metric)
        active_requests.add(1, {"method": "ProcessRequest"})

        try:
            # Extract trace context from metadata for distributed tracing
            # This enables correlation with upstream services
            metadata = dict(stream.metadata)
            ctx = propagator.extract(carrier=metadata)

            # Create span for the RPC method (manual since grpclib has no auto-instrumentation)
            with tracer.start_as_current_span(
                "grpc.server.ProcessRequest",
                context=ctx,
                kind=trace.SpanKind.SERVER,
            ) as span:
                span.set_attribute("rpc.system", "grpc")
                span.set_attribute("rpc.method", "ProcessRequest")
                span.set_attribute("rpc.service", "MyService")

                # Contextual logging - trace context now available
                logger.info(f"Processing request: {request.id}")

                # Manual span for specific operation
                with tracer.start_as_current_span("process-business-logic") as child_span:
                    child_span.set_attribute("request.id", request.id)

                    try:
                        result = await self._do_business_logic(request)

                        # Record success metrics
                        duration = time.time() - start_time
                        request_counter.add(1, {"method": "ProcessRequest", "error": "false"})
                        request_duration.record(duration, {"method": "ProcessRequest", "error": "false"})

                        logger.info(f"Request processed successfully in {duration:.3f}s")
                        await stream.send_message(result)

                    except Exception as e:
                        child_span.record_exception(e)
                        child_span.set_status(trace.StatusCode.ERROR, str(e))
                        span.set_status(trace.StatusCode.ERROR, str(e))

                        # Record error metrics
                        duration = time.time() - start_time
                        request_counter.add(1, {"method": "ProcessRequest", "error": "true"})
                        request_duration.record(duration, {"method": "ProcessRequest", "error": "true"})

                        logger.error(f"Business logic failed: {e}")
                        raise

        finally:
            active_requests.add(-1, {"method": "ProcessRequest"})

    async def _do_business_logic(self, request: MyRequest) -> MyResponse:
        # Another manual span for nested operation
        with tracer.start_as_current_span("database-query") as span:
            span.set_attribute("db.system", "postgresql")
            span.set_attribute("db.operation", "SELECT")

            logger.info("Executing database query")

            # Simulate async database operation
            await asyncio.sleep(DB_LATENCY_MS / 1000)  # bench: the reference service's 0.01 s by default

            return MyResponse(result="success")


# Async gRPC client with manual trace propagation
async def call_service(addr: str, port: int, request: MyRequest) -> MyResponse:
    with tracer.start_as_current_span(
        "grpc.client.ProcessRequest",
        kind=trace.SpanKind.CLIENT,
    ) as span:
        span.set_attribute("rpc.system", "grpc")
        span.set_attribute("rpc.method", "ProcessRequest")
        span.set_attribute("net.peer.name", addr)
        span.set_attribute("net.peer.port", port)

        # Inject trace context into metadata for propagation
        metadata = {}
        propagator.inject(carrier=metadata)

        logger.info(f"Calling service at {addr}:{port}")

        async with Channel(addr, port) as channel:
            stub = MyServiceStub(channel)
            return await stub.ProcessRequest(request, metadata=list(metadata.items()))


async def serve():
    server = Server([MyServiceImpl()])
    await server.start(LISTEN_HOST, int(LISTEN_PORT))
    logger.info(f"Starting async gRPC server on port {LISTEN_PORT}")
    await server.wait_closed()


if __name__ == '__main__':
    asyncio.run(serve())
