/**
 * A small tensorlens client over `fetch`, typed only by what openapi-typescript generates
 * from the service's `openapi.json` (`npm run generate` writes `src/schema.d.ts`).
 *
 * It is the example a frontend team starts from, and a check on the document: a path,
 * parameter, status or schema renamed or dropped in `openapi.json` makes `tsc --noEmit`
 * fail here (`make test` runs both steps, tests/test_typescript.py).
 */
import type { components, operations } from "./schema";

type Schemas = components["schemas"];

export type Problem = Schemas["Problem"];
export type TrainingConfig = Schemas["SpiralConfig"] | Schemas["RegressionConfig"];
export type Training = Schemas["TrainingPublic"];
export type ImageResult = Schemas["ImageResult"];
export type PredictRequest = Schemas["PredictRequest"];
export type Prediction = Schemas["PredictionPublic"];
export type SampleInfo = Schemas["SampleInfo"];
/** One pipeline step: the union of every op's `<Op>Step` component, tagged by `op`. */
export type PipelineStep = Schemas[Extract<keyof Schemas, `${string}Step`>];

/** The JSON body an operation answers with `status`. */
type JsonBody<
  Op extends keyof operations,
  Status extends keyof operations[Op]["responses"],
> = operations[Op]["responses"][Status] extends { content: { "application/json": infer Body } }
  ? Body
  : never;

type Query<Op extends keyof operations> = NonNullable<operations[Op]["parameters"]["query"]>;

/** Any answer that is not a success: its problem document, request id and retry hint. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Problem,
    readonly requestId: string | null,
    /** Seconds to wait before retrying (429, some 503s), from `Retry-After`. */
    readonly retryAfterS: number | null,
  ) {
    super(`${problem.title}: ${problem.detail}`);
  }
}

export class TensorlensClient {
  constructor(private readonly baseUrl: string) {}

  listSamples(): Promise<JsonBody<"samples-list_sample_images", 200>> {
    return this.json("GET", "/v1/samples");
  }

  /** Apply `steps` in order to a bundled sample or an uploaded image. */
  pipeline(
    steps: PipelineStep[],
    source: { sample: NonNullable<Query<"images-pipeline">["sample"]> } | { image: Blob },
    query: Omit<Query<"images-pipeline">, "sample"> = {},
  ): Promise<JsonBody<"images-pipeline", 200>> {
    const form = new FormData();
    form.set("steps", JSON.stringify(steps));
    const params: Query<"images-pipeline"> = { ...query };
    if ("image" in source) form.set("image", source.image);
    else params.sample = source.sample;
    return this.json("POST", `/v1/images/pipeline${search(params)}`, form);
  }

  /** Queue a training; `location` is where to watch it (the `Location` header). */
  async createTraining(config: TrainingConfig): Promise<{ training: Training; location: string }> {
    const response = await this.send("POST", "/v1/trainings", JSON.stringify(config));
    const training: JsonBody<"trainings-create_training", 202> = await response.json();
    return { training, location: response.headers.get("Location") ?? training.links["self"] ?? "" };
  }

  getTraining(jobId: string): Promise<JsonBody<"trainings-get_training", 200>> {
    return this.json("GET", `/v1/trainings/${encodeURIComponent(jobId)}`);
  }

  predict(
    name: operations["models-predict"]["parameters"]["path"]["name"],
    body: PredictRequest,
  ): Promise<JsonBody<"models-predict", 200>> {
    const path = `/v1/models/${encodeURIComponent(name)}/predict`;
    return this.json("POST", path, JSON.stringify(body));
  }

  private async json<T>(method: string, path: string, body?: BodyInit): Promise<T> {
    return (await (await this.send(method, path, body)).json()) as T;
  }

  private async send(method: string, path: string, body?: BodyInit): Promise<Response> {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (typeof body === "string") headers["Content-Type"] = "application/json";
    const response = await fetch(new URL(path, this.baseUrl), {
      method,
      headers,
      ...(body === undefined ? {} : { body }),
    });
    if (response.ok) return response;
    const problem: Problem = await response.json();
    const retryAfter = response.headers.get("Retry-After");
    throw new ApiError(
      response.status,
      problem,
      response.headers.get("X-Request-ID"),
      retryAfter === null ? null : Number(retryAfter),
    );
  }
}

function search(params: Record<string, string | number | boolean | null | undefined>): string {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `?${text}` : "";
}
