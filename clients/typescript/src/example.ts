/**
 * The README's first session in TypeScript: a two-step pipeline on a sample, the notes'
 * spiral and ensemble trainings, a prediction. Type-checked, not run, by the tests.
 */
import { ApiError, type PipelineStep, TensorlensClient, type TrainingConfig } from "./client";

const NOTES_SPIRAL: TrainingConfig = {
  task: "spiral",
  data: { points_per_class: 1000, classes: 3, noise: 0.2, seed: 12345 },
  model: { hidden: [100], activation: "relu" },
  optimizer: { name: "adam", lr: 1e-3, weight_decay: 1e-5 },
  epochs: 1000,
};

const NOTES_ENSEMBLE: TrainingConfig = {
  task: "regression",
  data: { n_points: 100, noise: 0.3, seed: 1 },
  model: { hidden: [100], activation: "relu", ensemble_size: 5 },
  optimizer: { name: "adam", lr: 0.01 },
  epochs: 1000,
};

export async function firstSession(baseUrl: string): Promise<void> {
  const client = new TensorlensClient(baseUrl);
  const samples = await client.listSamples();
  console.log(samples.map((sample) => `${sample.name} ${sample.shape.join("x")}`));

  const steps: PipelineStep[] = [{ op: "rgb2gray" }, { op: "canny", sigma: 2 }];
  const edges = await client.pipeline(steps, { sample: "astronaut" }, { include_image: false });
  console.log(edges.shape, edges.dtype, edges.steps.map((step) => `${step.op} ${step.ms} ms`));

  for (const config of [NOTES_SPIRAL, NOTES_ENSEMBLE]) {
    try {
      const { training, location } = await client.createTraining(config);
      console.log(training.id, training.status, training.config.task, location);
      if (training.model_id) {
        const prediction = await client.predict(training.model_id, { inputs: [[0.1, 0.2]] });
        console.log(prediction.classes ?? prediction.mean);
      }
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const wait = error.retryAfterS === null ? "" : ` (retry in ${error.retryAfterS} s)`;
      console.error(`${error.status} ${error.problem.detail} [${error.requestId}]${wait}`);
    }
  }
}
